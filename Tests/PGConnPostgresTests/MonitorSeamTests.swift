import Foundation
import Logging
import PGConnSync
import PGConnTestSupport
import Synchronization
import Testing

@testable import PGConnCore
@testable import PGConnPostgres

/// The monitor's loop, timers and epoll registrations for real, the server scripted (``ScriptedServer``):
/// admission, resets, result handling and lookups without PostgreSQL.
@Suite(.serialized) struct MonitorSeamTests {
    static let ok = QueryResultSummary(status: .tuples, firstValue: "1")

    final class Harness: @unchecked Sendable {
        // @unchecked: the fields are set once in init; Monitor, MetricsStore and ScriptedServer are thread-safe.
        let metrics = MetricsStore(
            buildInfo: BuildInfo(version: "t", revision: "t", libpqVersion: "-", microhttpdVersion: "-"))
        let server: ScriptedServer
        let monitor: Monitor

        init(
            _ targets: [TargetConfig], server: ScriptedServer, maxConcurrentConnects: Int = 64,
            maxConcurrentProbes: Int = 32,
            lookUp: @escaping @Sendable (String) -> Result<String, Failure> = { _ in .success("192.0.2.1") },
            readPassword: @escaping @Sendable (PasswordSource) -> Result<String?, Failure> = { _ in .success(nil) },
            accepts: @escaping @Sendable (Endpoint) -> Bool = { _ in false }
        ) throws {
            self.server = server
            let environment = MonitorEnvironment(
                connections: server, lookUp: lookUp, readPassword: readPassword, accepts: accepts)
            monitor = try Monitor(
                config: ValidatedConfig(targets: targets), metrics: metrics,
                logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, environment: environment, seed: 7,
                maxConcurrentConnects: maxConcurrentConnects, maxConcurrentProbes: maxConcurrentProbes)
            monitor.start()
        }

        deinit { monitor.stop() }

        func series(_ name: String) -> TargetSeries { metrics.snapshot().first { $0.name == name }! }

        func await(_ what: String = "", timeout: Duration = .seconds(10), _ condition: () -> Bool) throws {
            let deadline = ContinuousClock.now + timeout
            while !condition() {
                guard ContinuousClock.now < deadline else { throw AwaitTimeout(what: what) }
                Thread.sleep(forTimeInterval: 0.005)
            }
        }

        /// The value of an unlabelled gauge in the exposition.
        func gauge(_ name: String) -> Double? {
            exposition().split(separator: "\n").first { $0.hasPrefix(name + " ") }.flatMap {
                Double($0.split(separator: " ")[1])
            }
        }

        func exposition() -> String {
            String(decoding: metrics.render(wallClock: 0, now: .now(), process: nil), as: UTF8.self)
        }
    }

    struct AwaitTimeout: Error { var what: String }

    static func target(
        _ name: String, host: String = "192.0.2.1", query: String = "SELECT 1", interval: Duration = .milliseconds(50),
        timeout: Duration = .milliseconds(40), connectTimeout: Duration = .milliseconds(200),
        password: PasswordSource = .none, backoff: BackoffConfig? = nil
    ) -> TargetConfig {
        TargetConfig(
            name: name, dsn: "host=\(host) port=5432 user=u dbname=\(name)",
            summary: DSNSummary(host: host, port: "5432", database: name, user: "u", sslmode: "prefer"),
            password: password, query: query, probeInterval: interval, probeTimeout: timeout,
            connectTimeout: connectTimeout, loginInterval: .zero,
            backoff: backoff
                ?? BackoffConfig(initial: .milliseconds(20), max: .milliseconds(40), multiplier: 2, jitter: 0))
    }

    @Test func admissionBoundsConnectsInProgressAndLetsTheRestTakeTurns() throws {
        let server = ScriptedServer(connect: { _ in .hang })
        let harness = try Harness((0..<10).map { Self.target("t\($0)") }, server: server, maxConcurrentConnects: 3)
        try harness.await("three connecting, seven waiting") {
            harness.exposition().contains("pgconn_exporter_connects_in_progress 3\n")
                && harness.exposition().contains("pgconn_exporter_connects_waiting 7\n")
        }
        // Connect timeouts free turns: every target gets to try, never more than three at once.
        try harness.await("every target tried") {
            (0..<10).allSatisfy { harness.series("t\($0)").totalConnectionFailures >= 1 }
        }
        #expect(server.snapshot.mostConnecting == 3)
        #expect((0..<10).allSatisfy { harness.series("t\($0)").connectionFailures[.timeout] ?? 0 >= 1 })
    }

    @Test func aLostSessionIsResetOneConnectionAtATime() throws {
        let server = ScriptedServer(query: { _, sql in
            sql == SessionQueries.facts
                ? .reply([QueryResultSummary(status: .tuples)]) : .lose("server closed the connection")
        })
        let harness = try Harness([Self.target("db")], server: server)
        try harness.await { harness.series("db").resets >= 5 }
        let counts = server.snapshot
        #expect(counts.mostOpen == 1, "never a second connection while one is held")
        #expect(counts.open <= 1)
        #expect(harness.series("db").disconnects[.connectionLost, default: 0] >= 5)
    }

    @Test func aTimedOutProbeIsCancelledAndItsConnectionClosed() throws {
        let server = ScriptedServer(query: { _, sql in sql == SessionQueries.facts ? .reply([Self.ok]) : .hang })
        let harness = try Harness([Self.target("db")], server: server)
        try harness.await { harness.series("db").probeFailures[.timeout, default: 0] >= 3 }
        try harness.await("a cancel per timeout") { server.snapshot.cancels >= 3 }
        #expect(server.snapshot.mostOpen == 1)
    }

    @Test func copyFailsTheProbeAndDiscardsTheConnectionWithoutSpinning() throws {
        let server = ScriptedServer(query: { dsn, sql in
            sql == SessionQueries.facts || dsn.contains("healthy") ? .reply([Self.ok]) : .copy
        })
        let harness = try Harness([Self.target("copy"), Self.target("healthy")], server: server)
        try harness.await { harness.series("copy").resets >= 3 }
        let series = harness.series("copy")
        #expect(series.probeFailures[.queryError, default: 0] >= 3)
        let probes = harness.series("healthy").probes
        try harness.await("the other target keeps probing") { harness.series("healthy").probes >= probes + 5 }
    }

    @Test func aProbeLeavingATransactionOpenIsRolledBack() throws {
        let server = ScriptedServer(query: { _, sql in
            sql == SessionQueries.rollback
                ? .reply([QueryResultSummary(status: .command)])
                : .reply([Self.ok], transactionOpen: sql != SessionQueries.facts)
        })
        let harness = try Harness([Self.target("db", query: "BEGIN; SELECT 1")], server: server)
        try harness.await { harness.series("db").probes >= 3 }
        let queries = server.snapshot.queries
        #expect(
            Array(queries.prefix(5)) == [
                SessionQueries.facts, "BEGIN; SELECT 1", "ROLLBACK", "BEGIN; SELECT 1", "ROLLBACK",
            ])
        #expect(server.snapshot.started == 1)
    }

    /// With a silent DNS server, 200 targets once queued 2,000 lookups in 30 s. One lookup per target at a time,
    /// whatever the connect timeouts do, and the failure is `dns`, not `timeout`.
    @Test func hungLookupsAreOnePerTargetAndFailAsDNS() throws {
        let calls = Lock(0)
        let release = DispatchSemaphore(value: 0)
        let server = ScriptedServer()
        let names = (0..<8).map { "hung\($0)" }
        let harness = try Harness(
            names.map { Self.target($0, host: "\($0).example") } + [Self.target("numeric")], server: server,
            lookUp: { _ in
                calls.withLock { $0 += 1 }
                release.wait()
                return .success("192.0.2.9")
            })
        defer { for _ in 0..<64 { release.signal() } }
        try harness.await("every hung target timed out twice") {
            names.allSatisfy { harness.series($0).connectionFailures[.dns, default: 0] >= 2 }
        }
        #expect(names.allSatisfy { harness.series($0).connectionFailures[.timeout, default: 0] == 0 })
        #expect(calls.withLock { $0 } <= 4, "four resolver threads, each stuck in its first lookup")
        // The four stuck ones stay pending; the queued ones are withdrawn when their connect gives up, and
        // submitted again on the next attempt: never more than one per target.
        let pending = try #require(harness.gauge("pgconn_exporter_dns_lookups_pending"))
        #expect(pending >= 4 && pending <= 8, "one per target at most, got \(pending)")
        try harness.await("the numeric target does not wait for DNS") { harness.series("numeric").probes >= 3 }
    }

    @Test func aReloadKeepsUnchangedSessionsClosesRemovedOnesAndStartsNewOnes() throws {
        let server = ScriptedServer()
        let harness = try Harness(
            [Self.target("keep"), Self.target("tune"), Self.target("drop"), Self.target("move")], server: server)
        try harness.await { ["keep", "tune", "drop", "move"].allSatisfy { harness.series($0).probes >= 1 } }
        #expect(server.snapshot.started == 4)
        var tuned = Self.target("tune")
        tuned.query = "SELECT 2"
        var moved = Self.target("move")
        moved.dsn += " connect_timeout=9"
        let summary = try #require(
            harness.monitor.reload(ValidatedConfig(targets: [Self.target("keep"), tuned, moved, Self.target("new")])))
        #expect(
            summary
                == ReloadSummary(
                    added: ["new"], removed: ["drop"], reconfigured: ["tune"], reconnected: ["move"],
                    unchanged: ["keep"]))
        try harness.await("the new target probes") { harness.series("new").probes >= 1 }
        #expect(server.snapshot.started == 6, "one new connection for new, one for move; keep and tune kept theirs")
        try harness.await("tune runs its new query") { server.snapshot.queries.contains("SELECT 2") }
        #expect(server.snapshot.open == 4)
        #expect(harness.metrics.snapshot().map(\.name) == ["keep", "tune", "move", "new"])
        #expect(harness.series("move").connectionAttempts == 2, "counters kept across a reconnect")
    }

    /// Loop lag used to be recorded only when a timer fired, so nothing showed while the loop was stuck.
    /// `pgconn_exporter_loop_overdue_seconds` is read at scrape time and grows during the stall.
    @Test func aStalledLoopShowsInTheOverdueGaugeWhileItLasts() throws {
        let stalled = Lock(false)
        let server = ScriptedServer(query: { dsn, _ in
            let stall =
                dsn.contains("stalls")
                && !stalled.withLock { stalled in
                    defer { stalled = true }
                    return stalled
                }
            return stall ? .stall(.milliseconds(1500)) : .reply([Self.ok])
        })
        let harness = try Harness(
            [Self.target("healthy"), Self.target("stalls", connectTimeout: .seconds(5))], server: server)
        var most = 0.0
        try harness.await("overdue > 0.5 s during the stall") {
            let overdue = harness.monitor.overdue.seconds
            most = max(most, overdue)
            return overdue > 0.5
        }
        try harness.await("back to 0 after it") { harness.monitor.overdue < .milliseconds(100) }
        #expect(most < 2, "bounded by the stall, got \(most)")
    }

    /// Connect steps (SCRAM's PBKDF2, TLS) run on connect workers: a step that takes long holds a worker, never
    /// the loop. Here the step never returns until the test says so; the other target probes on meanwhile.
    @Test func aConnectStepThatTakesLongDoesNotDelayOtherTargets() throws {
        let gate = ScriptedServer.Gate()
        defer { gate.open() }
        let server = ScriptedServer(connect: { dsn in dsn.contains("slow") ? .blockUntil(gate) : .ready })
        let harness = try Harness(
            [Self.target("slow", connectTimeout: .seconds(30)), Self.target("healthy")], server: server)
        try harness.await("healthy probes ten times while slow's connect step runs") {
            harness.series("healthy").probes >= 10
        }
        #expect(harness.series("slow").probes == 0)
        #expect(harness.monitor.overdue < .seconds(1))
        gate.open()
        try harness.await("slow connects once its step returns") { harness.series("slow").probes >= 1 }
    }

    /// A connect given up while its step runs (the deadline passed) is closed by the worker when the step
    /// returns; steps still queued are withdrawn and never start, so blocked workers bound what is open.
    @Test func aConnectGivenUpDuringItsStepIsClosedWhenTheStepReturns() throws {
        let gate = ScriptedServer.Gate()
        defer { gate.open() }
        let server = ScriptedServer(connect: { _ in .blockUntil(gate) })
        let harness = try Harness([Self.target("slow", connectTimeout: .milliseconds(100))], server: server)
        try harness.await("three connect timeouts") {
            harness.series("slow").connectionFailures[.timeout, default: 0] >= 3
        }
        #expect(server.snapshot.mostOpen <= MonitorLoop.connectWorkers, "no more started than workers blocked")
        gate.open()
        try harness.await("connected, the abandoned ones closed") {
            harness.series("slow").probes >= 1 && server.snapshot.open == 1
        }
        #expect(Set(harness.series("slow").connectionFailures.filter { $0.value > 0 }.keys) == [.timeout])
    }

    @Test func aStopDuringAConnectStepClosesTheConnectionWhenTheStepReturns() throws {
        let gate = ScriptedServer.Gate()
        defer { gate.open() }
        let server = ScriptedServer(connect: { _ in .blockUntil(gate) })
        let harness = try Harness([Self.target("slow", connectTimeout: .seconds(30))], server: server)
        // The poll step, blocked at the gate: awaiting `started` alone would also pass between the start step and
        // the poll step, while the connection is in the loop's hands and stop() closes it itself.
        try harness.await("the connect step is running") { gate.waiters == 1 }
        harness.monitor.stop()
        #expect(server.snapshot.open == 1, "still in the worker's hands")
        gate.open()
        try harness.await("closed by the worker") { server.snapshot.open == 0 }
    }

    @Test func aChangedPasswordEndsTheCredentialBackoff() throws {
        let password = Lock("wrong")
        let harness = try Harness(
            [Self.target("db", password: .file("/scripted"))],
            server: ScriptedServer(connect: { _ in
                password.withLock { $0 } == "right"
                    ? .ready
                    : .fail(Failure(reason: .auth, sqlstate: "28P01", message: "password authentication failed"))
            }),
            readPassword: { _ in .success(password.withLock { $0 }) })
        try harness.await { harness.series("db").connectionFailures[.auth, default: 0] == 1 }
        #expect(harness.series("db").backoff >= 48, "a credential failure waits at least a minute")
        password.withLock { $0 = "right" }
        try harness.await("up within a credential check") { harness.series("db").probes >= 1 }
        #expect(harness.series("db").connectionFailures[.auth, default: 0] == 1, "no retry with the old password")
    }

    /// A server that refuses, then listens again: sessions in a long backoff reconnect as soon as a port check
    /// sees it accept, one check per endpoint at a time however many targets share it, and no connect meanwhile.
    @Test func aPortThatAcceptsAgainEndsTheRefusedBackoffOfEverySessionOnIt() throws {
        struct Checks { var listening = false, byEndpoint: [Endpoint: Int] = [:], inFlight = 0, mostInFlight = 0 }
        let checks = Lock(Checks())
        let long = BackoffConfig(initial: .seconds(60), max: .seconds(60), multiplier: 2, jitter: 0)
        let server = ScriptedServer(connect: { _ in
            checks.withLock { $0.listening }
                ? .ready : .fail(Failure(reason: .refused, message: "Connection refused"))
        })
        let harness = try Harness(
            [
                Self.target("a", host: "192.0.2.1", backoff: long), Self.target("b", host: "192.0.2.1", backoff: long),
                Self.target("c", host: "192.0.2.2", backoff: long),
            ], server: server,
            accepts: { endpoint in
                let listening = checks.withLock { checks in
                    checks.byEndpoint[endpoint, default: 0] += 1
                    checks.inFlight += 1
                    checks.mostInFlight = max(checks.mostInFlight, checks.inFlight)
                    return checks.listening
                }
                checks.withLock { $0.inFlight -= 1 }
                return listening
            })
        let shared = Endpoint.tcp(address: "192.0.2.1", port: 5432)
        try harness.await("both endpoints checked a few times") {
            checks.withLock { $0.byEndpoint[shared, default: 0] >= 3 && $0.byEndpoint.count == 2 }
        }
        #expect(server.snapshot.started == 3, "no connect while the port refuses: one attempt per backoff step")
        #expect(harness.series("a").backoff == 60)
        checks.withLock { $0.listening = true }
        try harness.await("every session up long before its minute of backoff") {
            ["a", "b", "c"].allSatisfy { harness.series($0).probes >= 1 }
        }
        #expect(server.snapshot.started == 6, "one connect each once the port accepts")
        #expect(checks.withLock { $0.mostInFlight } == 1)
    }
}

extension TargetSeries {
    var totalConnectionFailures: UInt64 { connectionFailures.values.reduce(0, +) }
}
