import Foundation
import Glibc
import PGConnPostgres
import PGConnSync
import Synchronization
import Testing

@testable import PGConnCore

/// The fault matrix of docs/reliability.md: one scenario per row of its table, each against a PostgreSQL server
/// of its own with `log_connections = on`. The table is the contract (the reason and the family it is counted
/// in); the scenarios are below, by the same names. Prints one line of figures per scenario for the page.
@Suite(.serialized) struct FaultMatrixTests {
    /// One row of the table.
    struct Row: Sendable, CustomTestStringConvertible {
        var scenario: String
        var reasons: Set<FailureReason>
        var family: String
        var sessionStays: Bool
        var testDescription: String { scenario }
    }

    static let page = repositoryRoot.appendingPathComponent("docs/reliability.md")

    /// The rows between the `fault-matrix` markers of docs/reliability.md.
    static func rows() throws -> [Row] {
        let text = try String(contentsOf: page, encoding: .utf8)
        guard let begin = text.range(of: "<!-- fault-matrix begin -->"),
            let end = text.range(of: "<!-- fault-matrix end -->")
        else { throw TestPostgresError("docs/reliability.md has no fault-matrix markers") }
        return try text[begin.upperBound..<end.lowerBound].split(separator: "\n").dropFirst(2).map { line in
            let cells = line.split(separator: "|").map { $0.trimmingCharacters(in: .whitespaces) }
            guard cells.count == 5 else { throw TestPostgresError("bad fault-matrix row: \(line)") }
            // `none`: the fault must not fail anything (the exporter is built not to be hit by it).
            let reasons =
                try cells[2] == "none"
                ? []
                : cells[2].components(separatedBy: " or ").map { text -> FailureReason in
                    guard
                        let reason = FailureReason(
                            rawValue: text.trimmingCharacters(in: CharacterSet(charactersIn: "`")))
                    else { throw TestPostgresError("unknown reason in \(line)") }
                    return reason
                }
            return Row(
                scenario: cells[0].trimmingCharacters(in: CharacterSet(charactersIn: "`")), reasons: Set(reasons),
                family: cells[3], sessionStays: cells[4] == "yes")
        }
    }

    static let allRows: [Row] = (try? rows()) ?? []

    @Test func everyRowHasAScenarioAndEveryScenarioARow() throws {
        let rows = try Self.rows()
        #expect(!rows.isEmpty)
        #expect(
            Set(rows.map(\.scenario)) == Set(Scenario.all.keys).union(Self.ownTests),
            "docs/reliability.md and the scenarios differ")
        #expect(Set(rows.map(\.family)).isSubset(of: ["disconnects", "connects", "logins", "probes", "none"]))
        #expect(rows.allSatisfy { ($0.family == "none") == $0.reasons.isEmpty }, "reason none goes with family none")
    }

    /// Rows with a test of their own below, not a ``Scenario`` (they need the exporter in a namespace).
    static let ownTests: Set<String> = ["dns_stops_resolving"]

    @Test(arguments: allRows.filter { !ownTests.contains($0.scenario) })
    func scenario(_ row: Row) throws {
        let scenario = try #require(Scenario.all[row.scenario], "no scenario \(row.scenario)")
        let context = try Context(scenario)
        defer { context.cleanup() }
        try scenario.prepare(context)
        let fixture = try MonitorFixture([try context.target()])
        context.fixture = fixture
        try fixture.await("db") { $0.isSessionUp && (!scenario.loginChecks || $0.loginUp) }
        let before = fixture.series("db")
        let seenBefore = context.exporterConnections()
        let sampler = BackendSampler(context.server)
        defer { sampler.stop() }

        let clock = ContinuousClock()
        let injected = clock.now
        try scenario.inject(context)
        func count(_ series: TargetSeries) -> UInt64 {
            let counts: [FailureReason: UInt64] =
                switch row.family {
                case "disconnects": series.disconnects
                case "connects": series.connectionFailures
                case "logins": series.loginFailures
                default: series.probeFailures
                }
            let previous: [FailureReason: UInt64] =
                switch row.family {
                case "disconnects": before.disconnects
                case "connects": before.connectionFailures
                case "logins": before.loginFailures
                default: before.probeFailures
                }
            return row.reasons.reduce(0) { $0 + (counts[$1, default: 0] - previous[$1, default: 0]) }
        }
        do {
            if row.reasons.isEmpty {
                // Nothing to detect: ten probes pass with the fault in place (after any reconnect it needs).
                try fixture.await("db", timeout: .seconds(30)) {
                    $0.isSessionUp && $0.probes >= before.probes + 10 && $0.consecutiveFailures == 0
                }
            } else {
                try fixture.await("db", timeout: .seconds(30)) { count($0) >= 1 }
            }
        } catch {
            let seen = Self.newReasons(before, fixture.series("db")).map(\.rawValue).sorted()
            Issue.record(
                "\(row.scenario): expected \(row.reasons.map(\.rawValue).sorted()) in \(row.family), saw \(seen)")
            throw error
        }
        let detection = clock.now - injected
        let during = fixture.series("db")
        if row.sessionStays {
            #expect(during.totalDisconnects == before.totalDisconnects, "the session stays")
            #expect(during.resets == before.resets)
        }
        let unexpected = Self.newReasons(before, during).subtracting(row.reasons)
            .subtracting(scenario.alsoSeen)
        #expect(unexpected.isEmpty, "\(row.scenario): also counted \(unexpected.map(\.rawValue).sorted())")

        let healed = clock.now
        try scenario.heal(context)
        try fixture.await("db", timeout: .seconds(30)) {
            $0.isSessionUp && (!scenario.loginChecks || $0.loginUp) && $0.consecutiveFailures == 0
        }
        let recovery = clock.now - healed
        let after = fixture.series("db")
        let seen = context.exporterConnections() - seenBefore
        let accounted =
            Int(after.connectionAttempts - before.connectionAttempts) + Int(after.loginChecks - before.loginChecks)
        // Cancel requests (a timed-out probe) are connections of their own; each probe sends at most one. The
        // one more: the port check that finds a restarted server listening again.
        let cancels = row.family == "probes" ? Int(after.probes - before.probes) : 0
        #expect(seen <= accounted + cancels + 1, "\(row.scenario): the server saw \(seen) connections")
        let most = sampler.stop()
        #expect(most <= 3, "\(row.scenario): \(most) backends of the exporter at once (session, login, probe at most)")
        #expect(most >= 1, "the sampler saw the session")
        print(
            "fault-matrix | `\(row.scenario)` | \(row.reasons.isEmpty ? "none" : Self.format(detection)) | \(Self.format(recovery)) | \(seen) "
                + "| \(after.connectionAttempts - before.connectionAttempts) | \(after.loginChecks - before.loginChecks) "
                + "| \(most) |")
    }

    /// `dns_stops_resolving`: the target's host name is in an /etc/hosts of the exporter's own (a bind mount in
    /// a mount namespace, `unshare -m`, as `MultiAddressTests` does). The entry is taken out and the session
    /// terminated: reconnects fail with the row's reason, one lookup and no connection per backoff step; with
    /// the entry back the target comes back, without a restart.
    @Test(
        .enabled(
            if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"),
            "needs root and unshare"))
    func dnsStopsResolving() throws {
        let row = try #require(try Self.rows().first { $0.scenario == "dns_stops_resolving" })
        let server = try TestPostgres.start(settings: ["log_connections": "on"])
        defer { server.cleanup() }
        let directory = try TemporaryDirectory()
        let entry = "127.0.0.1 db.gone.test\n"
        let hosts = try directory.write("hosts", entry)
        // In place, never by rename: the bind mount holds the file's inode.
        func setHosts(_ text: String) throws {
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: hosts))
            try handle.truncate(atOffset: 0)
            try handle.write(contentsOf: Data(text.utf8))
            try handle.close()
        }
        let (exporter, port) = try ExporterProcess.start(
            config: """
                defaults:
                  probe_interval: 200ms
                  probe_timeout: 150ms
                  login_interval: 300ms
                  backoff: {initial: 50ms, max: 500ms}
                targets:
                  - name: db
                    dsn: host=db.gone.test port=\(server.port) user=postgres password=\(TestPostgres.superuserPassword) dbname=postgres sslmode=disable
                """, in: directory,
            launcher: [
                "/usr/bin/unshare", "-m", "/bin/sh", "-c", "mount --bind \"$0\" /etc/hosts && exec \"$@\"", hosts,
            ])
        defer { exporter.kill() }
        func page() throws -> String { try httpGet(port: port, path: "/metrics").body }
        func value(_ series: String) throws -> Double { ExporterProcessTests.value(try page(), series) ?? 0 }
        func attempts() throws -> Double {
            try value(#"pgconn_connection_attempts_total{target="db"}"#)
                + value(#"pgconn_login_checks_total{target="db"}"#)
        }
        func connections() -> Int {
            server.serverLog().components(separatedBy: "connection received: host=127.0.0.1").count - 1
        }
        try eventually(timeout: .seconds(20)) {
            let page = try page()
            return page.contains(#"pgconn_up{target="db"} 1"#) && page.contains(#"pgconn_login_up{target="db"} 1"#)
        }
        let (attemptsBefore, seenBefore) = (try attempts(), connections())
        let (connectsBefore, loginsBefore) = (
            try value(#"pgconn_connection_attempts_total{target="db"}"#),
            try value(#"pgconn_login_checks_total{target="db"}"#)
        )

        let clock = ContinuousClock()
        let injected = clock.now
        try setHosts("# db.gone.test is gone\n")
        try server.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgconn_exporter'")
        let failures = row.reasons.map { #"pgconn_connection_failures_total{target="db",reason="\#($0.rawValue)"}"# }
        try eventually(timeout: .seconds(30)) { try failures.reduce(0) { $0 + (try value($1)) } >= 2 }
        let detection = clock.now - injected
        #expect(try page().contains(#"pgconn_up{target="db"} 0"#))
        let seenWhileGone = connections() - seenBefore
        #expect(seenWhileGone <= 1, "a name that does not resolve costs lookups, not connections: \(seenWhileGone)")

        let healed = clock.now
        try setHosts(entry)
        try eventually(timeout: .seconds(30)) {
            let page = try page()
            return page.contains(#"pgconn_up{target="db"} 1"#) && page.contains(#"pgconn_login_up{target="db"} 1"#)
        }
        let recovery = clock.now - healed
        let seen = connections() - seenBefore
        let accounted = Int(try attempts() - attemptsBefore)
        #expect(seen <= accounted + 1, "the server saw \(seen) connections, the exporter made \(accounted)")
        #expect(exporter.isRunning)
        print(
            "fault-matrix | `\(row.scenario)` | \(Self.format(detection)) | \(Self.format(recovery)) | \(seen) "
                + "| \(Int(try value(#"pgconn_connection_attempts_total{target="db"}"#) - connectsBefore)) "
                + "| \(Int(try value(#"pgconn_login_checks_total{target="db"}"#) - loginsBefore)) | - |")
    }

    /// Samples how many backends the exporter holds on the server (`pg_stat_activity`, every 50 ms) until
    /// stopped, and keeps the most seen: a target may hold its session, one login check and one probe at once.
    final class BackendSampler: Sendable {
        private let state = Lock((running: true, most: 0))
        private let done = DispatchSemaphore(value: 0)

        init(_ server: TestPostgres) {
            let first = Self.count(server)  // one sample before the fault, while the session is surely up
            state.withLock { $0.most = first }
            Thread { [self] in
                while state.withLock({ $0.running }) {
                    let count = Self.count(server)
                    state.withLock { $0.most = max($0.most, count) }
                    Thread.sleep(forTimeInterval: 0.05)
                }
                done.signal()
            }.start()
        }

        private static func count(_ server: TestPostgres) -> Int {
            (try? server.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgconn_exporter%'",
                timeout: .seconds(5))).flatMap { Int($0) } ?? 0
        }

        /// Stops sampling (idempotent) and returns the most backends seen.
        @discardableResult
        func stop() -> Int {
            let wasRunning = state.withLock { state in
                defer { state.running = false }
                return state.running
            }
            if wasRunning { done.wait() }
            return state.withLock { $0.most }
        }
    }

    /// Reasons counted in any family between two snapshots.
    static func newReasons(_ before: TargetSeries, _ after: TargetSeries) -> Set<FailureReason> {
        var reasons = Set<FailureReason>()
        for (old, new) in [
            (before.disconnects, after.disconnects), (before.connectionFailures, after.connectionFailures),
            (before.loginFailures, after.loginFailures), (before.probeFailures, after.probeFailures),
        ] {
            for (reason, count) in new where count > old[reason, default: 0] { reasons.insert(reason) }
        }
        return reasons
    }

    static func format(_ duration: Duration) -> String {
        let milliseconds = duration.milliseconds
        return milliseconds < 1000 ? "\(Int(milliseconds.rounded())) ms" : "\((milliseconds / 100).rounded() / 10) s"
    }

    // MARK: - Scenarios

    /// How one fault is made and undone.
    struct Scenario: Sendable {
        var settings: [String: String] = [:]
        var viaProxy = false
        var loginChecks = false
        var query = "SELECT 1"
        var probeInterval: Duration = .milliseconds(200)
        var probeTimeout: Duration = .milliseconds(150)
        var sslmode = "disable"
        /// Reasons that may also be counted on the way (a reconnect refused while the server starts, say).
        var alsoSeen: Set<FailureReason> = []
        /// Runs before the monitor starts (a role setting that must be in place for the session's connect).
        var prepare: @Sendable (Context) throws -> Void = { _ in }
        var inject: @Sendable (Context) throws -> Void
        var heal: @Sendable (Context) throws -> Void = { _ in }

        static let restartNoise: Set<FailureReason> = [.refused, .startingUp, .connectionLost, .network]

        static let all: [String: Scenario] = [
            "terminate": Scenario(inject: { try $0.terminateSession() }),
            "stop_fast": Scenario(
                alsoSeen: restartNoise, inject: { try $0.server.stopFast() }, heal: { try $0.server.start() }),
            // The server waits for the session until the exporter lets go: a login check refused with "shutting
            // down" closes it. The heal waits for the stop, which a session held on to would block for 30 s.
            "stop_smart": Scenario(
                loginChecks: true, alsoSeen: restartNoise.union([.startingUp]),
                inject: { $0.stopSmartInBackground() },
                heal: { context in
                    try context.awaitSmartStop()
                    try context.server.start()
                }),
            "stop_immediate": Scenario(
                alsoSeen: restartNoise, inject: { try $0.server.stopImmediate() }, heal: { try $0.server.start() }),
            "crash": Scenario(alsoSeen: restartNoise, inject: { try $0.crashAnotherBackend() }),
            "idle_session_timeout": Scenario(
                probeInterval: .seconds(2), probeTimeout: .seconds(1), alsoSeen: [.adminShutdown],
                inject: { context in
                    try context.server.psql("ALTER ROLE monitor SET idle_session_timeout = '300ms'")
                    try context.terminateSession()  // a role setting applies to the next session
                },
                heal: { try $0.server.psql("ALTER ROLE monitor RESET idle_session_timeout") }),
            // The session's own statement_timeout (probe_timeout, a startup option) outranks the role's: a role
            // setting shorter than the probe query does not fail it.
            "statement_timeout": Scenario(
                query: "SELECT pg_sleep(0.1)", probeInterval: .milliseconds(300), probeTimeout: .seconds(1),
                // A role setting applies from the next session on: in place before the session starts.
                prepare: { try $0.server.psql("ALTER ROLE monitor SET statement_timeout = '20ms'") },
                inject: { _ in },
                heal: { try $0.server.psql("ALTER ROLE monitor RESET statement_timeout") }),
            // A probe that opens a transaction is rolled back as soon as it answers: the session is never idle in
            // one for long enough.
            "idle_in_transaction_timeout": Scenario(
                query: "BEGIN; SELECT 1",
                prepare: { try $0.server.psql("ALTER ROLE monitor SET idle_in_transaction_session_timeout = '50ms'") },
                inject: { _ in },
                heal: { try $0.server.psql("ALTER ROLE monitor RESET idle_in_transaction_session_timeout") }),
            "database_dropped": Scenario(
                alsoSeen: [.adminShutdown],
                inject: { try $0.server.psql("DROP DATABASE app WITH (FORCE)") },
                heal: { context in
                    try context.server.psql("CREATE DATABASE app OWNER monitor")
                    // A credential failure holds the next attempt 60 s (account lockouts); a changed password
                    // file is tried at once, which is how the test skips the hold.
                    try context.rotatePassword()
                }),
            "too_many_connections": Scenario(
                loginChecks: true, inject: { try $0.server.psql("ALTER ROLE monitor CONNECTION LIMIT 1") },
                heal: { try $0.server.psql("ALTER ROLE monitor CONNECTION LIMIT -1") }),
            // Every slot but the superusers' taken: the session holds one, a psql of the test the other. Only new
            // connections are refused, so the login checks see it and the session stays.
            "max_connections": Scenario(
                settings: ["max_connections": "5", "superuser_reserved_connections": "3"], loginChecks: true,
                inject: { _ = try $0.startSleeper("slot") },
                heal: { context in
                    try context.server.psql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%-- slot'")
                }),
            "password_changed": Scenario(
                loginChecks: true, inject: { try $0.server.psql("ALTER ROLE monitor PASSWORD 'somebody-else'") },
                heal: { try $0.rotatePassword() }),
            "hba_removed": Scenario(
                loginChecks: true, inject: { try $0.rejectInHBA(true) },
                heal: { context in
                    try context.rejectInHBA(false)
                    try context.rotatePassword()
                }),
            "role_dropped": Scenario(
                loginChecks: true,
                inject: { context in
                    try context.server.psql(
                        "REASSIGN OWNED BY monitor TO postgres; DROP OWNED BY monitor", database: "app")
                    try context.server.psql(
                        "REASSIGN OWNED BY monitor TO postgres; DROP OWNED BY monitor; DROP ROLE monitor")
                },
                heal: { context in
                    try context.server.psql("CREATE ROLE monitor LOGIN PASSWORD 'recreated'")
                    try context.rotatePassword()
                }),
            "proxy_latency": Scenario(
                viaProxy: true, alsoSeen: [.connectionLost, .network],
                inject: { $0.proxy?.setMode(.latency(.milliseconds(300))) }, heal: { $0.proxy?.setMode(.forward) }),
            "proxy_throttle": Scenario(
                viaProxy: true, query: "SELECT repeat('x', CASE WHEN EXISTS (SELECT FROM big) THEN 200000 ELSE 1 END)",
                probeInterval: .seconds(2), probeTimeout: .seconds(1), alsoSeen: [.connectionLost, .network],
                inject: { context in
                    context.proxy?.setMode(.throttle(bytesPerSecond: 20_000))
                    try context.server.psql("INSERT INTO big VALUES (1)", database: "app")
                },
                heal: { context in
                    try context.server.psql("DELETE FROM big", database: "app")
                    context.proxy?.setMode(.forward)
                }),
            "slow_probe": Scenario(
                query: "SELECT pg_sleep(CASE WHEN EXISTS (SELECT FROM slow) THEN 1 ELSE 0 END)",
                alsoSeen: [.connectionLost, .network],
                inject: { try $0.server.psql("INSERT INTO slow VALUES (1)", database: "app") },
                heal: { context in
                    try context.server.psql("DELETE FROM slow", database: "app")
                    // No probe of the exporter may be left running on the server after its timeout.
                    try eventually(timeout: .seconds(10)) {
                        try context.server.psql(
                            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgconn_exporter' "
                                + "AND state = 'active' AND query LIKE '%pg_sleep%'") == "0"
                    }
                }),
            "temp_file_limit": Scenario(
                settings: ["temp_file_limit": "64kB", "work_mem": "64kB"],
                query: "SELECT count(*) FROM (SELECT g FROM generate_series(1, CASE WHEN EXISTS (SELECT FROM big) "
                    + "THEN 300000 ELSE 10 END) g ORDER BY g DESC) s",
                probeInterval: .seconds(2), probeTimeout: .seconds(1),
                inject: { try $0.server.psql("INSERT INTO big VALUES (1)", database: "app") },
                heal: { try $0.server.psql("DELETE FROM big", database: "app") }),
            "proxy_blackhole": Scenario(
                viaProxy: true, alsoSeen: [.connectionLost, .network],
                inject: { $0.proxy?.setMode(.blackhole) }, heal: { $0.proxy?.setMode(.forward) }),
            "proxy_reset": Scenario(
                viaProxy: true, alsoSeen: [.connectionLost, .network, .timeout],
                inject: { context in
                    context.proxy?.setMode(.reset)
                    context.proxy?.setMode(.forward)
                }),
            "proxy_cut": Scenario(
                viaProxy: true, query: "SELECT repeat('x', CASE WHEN EXISTS (SELECT FROM big) THEN 500000 ELSE 1 END)",
                probeInterval: .seconds(2), probeTimeout: .seconds(1), alsoSeen: [.connectionLost, .network],
                inject: { context in
                    try context.server.psql("INSERT INTO big VALUES (1)", database: "app")
                    context.proxy?.setMode(.dropAfter(bytes: 20_000))
                },
                heal: { context in
                    context.proxy?.setMode(.forward)
                    try context.server.psql("DELETE FROM big", database: "app")
                }),
            "tls_required": Scenario(
                inject: { try $0.reload(sslmode: "require") }, heal: { try $0.reload(sslmode: "disable") }),
        ]
    }

    /// A scenario's server, proxy and the password the target reads from its file.
    final class Context: @unchecked Sendable {
        // @unchecked: set in init; the proxy and the server are thread-safe; `sslmode` has its lock.
        let server: TestPostgres
        let proxy: TCPProxy?
        let scenario: Scenario
        let passwordFile: URL
        let sslmode: Lock<String>
        /// Set once the scenario's monitor runs, for a reload.
        var fixture: MonitorFixture?
        private var rotation = 0

        init(_ scenario: Scenario) throws {
            self.scenario = scenario
            server = try TestPostgres.start(
                settings: scenario.settings.merging(["log_connections": "on"]) { a, _ in a })
            proxy = scenario.viaProxy ? try TCPProxy(upstreamPort: server.port) : nil
            passwordFile = server.rootDir.appendingPathComponent("monitor.password")
            sslmode = Lock(scenario.sslmode)
            try server.psql("CREATE ROLE monitor LOGIN PASSWORD 'monitor-pw-0'; CREATE DATABASE app OWNER monitor")
            try server.psql(
                "CREATE TABLE slow (x int); CREATE TABLE big (x int); GRANT ALL ON slow, big TO monitor",
                database: "app")
            try "monitor-pw-0\n".write(to: passwordFile, atomically: true, encoding: .utf8)
        }

        func cleanup() {
            proxy?.close()
            server.cleanup()
        }

        /// The target, through the proxy when the scenario has one; its sslmode is read at every connect, so a
        /// scenario can change it (`tls_required`).
        func target() throws -> TargetConfig {
            let port = proxy?.port ?? server.port
            return try testTarget(
                "db", dsn: "host=127.0.0.1 port=\(port) user=monitor dbname=app sslmode=\(sslmode.withLock { $0 })",
                password: .file(passwordFile.path), query: scenario.query, probeInterval: scenario.probeInterval,
                probeTimeout: scenario.probeTimeout, loginInterval: scenario.loginChecks ? .milliseconds(300) : .zero)
        }

        /// Reloads the monitor with the target's sslmode changed: a changed DSN reconnects the session.
        func reload(sslmode mode: String) throws {
            sslmode.withLock { $0 = mode }
            guard let fixture, fixture.monitor.reload(ValidatedConfig(targets: [try target()])) != nil else {
                throw TestPostgresError("the reload did not finish")
            }
        }

        private let smartStop = DispatchSemaphore(value: 0)
        private let smartStopError = Lock<String?>(nil)

        /// Starts a smart shutdown on a thread of its own: it returns only once every session has ended.
        func stopSmartInBackground() {
            Thread {
                do { try self.server.stopSmart() } catch { self.smartStopError.withLock { $0 = "\(error)" } }
                self.smartStop.signal()
            }.start()
        }

        func awaitSmartStop() throws {
            guard smartStop.wait(timeout: .now() + 40) == .success else {
                throw TestPostgresError("the smart shutdown did not finish in 40 s")
            }
            if let error = smartStopError.withLock({ $0 }) { throw TestPostgresError(error) }
        }

        func terminateSession() throws {
            try server.psql(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgconn_exporter'")
        }

        /// A new password for the role and the file together (the file is re-read every 2 s while a credential
        /// failure holds the next attempt, and a changed one is tried at once).
        func rotatePassword() throws {
            rotation += 1
            try server.psql("ALTER ROLE monitor PASSWORD 'monitor-pw-\(rotation)'")
            try "monitor-pw-\(rotation)\n".write(to: passwordFile, atomically: true, encoding: .utf8)
        }

        /// Puts a `reject` line for the role first in pg_hba.conf (or takes it out) and reloads the server.
        func rejectInHBA(_ reject: Bool) throws {
            let file = server.dataDir.appendingPathComponent("pg_hba.conf")
            let line = "host all monitor 127.0.0.1/32 reject\n"
            let text = try String(contentsOf: file, encoding: .utf8).replacingOccurrences(of: line, with: "")
            try (reject ? line + text : text).write(to: file, atomically: false, encoding: .utf8)
            try server.psql("SELECT pg_reload_conf()")
        }

        /// A psql session of the test's own, sleeping 30 s on a thread (tagged so it can be found): its backend pid.
        func startSleeper(_ tag: String) throws -> String {
            let server = self.server
            let query = "SELECT pg_sleep(30) -- \(tag)"
            Thread { _ = try? server.psql(query, timeout: .seconds(40)) }.start()
            var pid = ""
            try eventually(timeout: .seconds(10)) {
                pid = try server.psql(
                    "SELECT pid FROM pg_stat_activity WHERE query = '\(query)' AND pid <> pg_backend_pid()")
                return !pid.isEmpty
            }
            return pid
        }

        func crashAnotherBackend() throws {
            let victim = try startSleeper("crash")
            guard let pid = pid_t(victim), kill(pid, SIGKILL) == 0 else {
                throw TestPostgresError("could not kill backend \(victim)")
            }
        }

        /// TCP connections the server logged from 127.0.0.1 (the exporter's; psql here uses the unix socket).
        func exporterConnections() -> Int {
            server.serverLog().components(separatedBy: "connection received: host=127.0.0.1").count - 1
        }
    }
}
