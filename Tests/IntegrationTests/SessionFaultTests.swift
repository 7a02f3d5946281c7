import Foundation
import PGConnCore
import PGConnPostgres
import Testing

/// Real faults against a real PostgreSQL: what the monitor sees, counts and how it recovers.
///
/// Durations printed here (detection, recovery) are the numbers the issue note reports; the assertions only
/// bound them loosely, because speed is checked by benchmarks, not by tests.
@Suite(.serialized) struct SessionFaultTests {
    static let superuser = TestPostgres.superuserPassword

    @Test func terminatedBackendIsCountedResetAndReconnected() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let fixture = try MonitorFixture([try testTarget("db", dsn: server.dsn(password: Self.superuser))])
        try fixture.await("db") { $0.isSessionUp }
        let before = fixture.series("db")

        let clock = ContinuousClock()
        let terminatedAt = clock.now
        let killed = try server.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pgconn_exporter'")
        #expect(killed == "1")
        try fixture.await("db") { $0.disconnects[.adminShutdown] == 1 }
        let detection = clock.now - terminatedAt
        print("detect terminated backend: \(detection.milliseconds) ms from calling psql (psql itself included)")

        let recovery = try fixture.await("db") { $0.isSessionUp && $0.sessionStart > before.sessionStart }
        print("reconnect after terminate: \(recovery.milliseconds) ms after detection")
        let after = fixture.series("db")
        #expect(after.resets == 1)
        #expect(after.totalDisconnects == 1)
        #expect(after.connectionAttempts == 2)
        #expect(after.outages == 1)
        #expect(after.consecutiveFailures == 0)
        #expect(after.backoff == 0)
    }

    @Test func immediateStopThenStartIsAnOutageAndARestart() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let fixture = try MonitorFixture([try testTarget("db", dsn: server.dsn(password: Self.superuser))])
        try fixture.await("db") { $0.isSessionUp && $0.serverStartTime != nil }
        let startTime = try #require(fixture.series("db").serverStartTime)

        try server.stopImmediate()
        try fixture.await("db") { $0.totalDisconnects == 1 }
        let lost = fixture.series("db")
        let reasons = lost.disconnects.filter { $0.value > 0 }.map(\.key)
        #expect(reasons == [.adminShutdown] || reasons == [.crashShutdown], "classified, got \(reasons)")
        #expect(!lost.isUp(now: .now()))
        try fixture.await("db") { $0.connectionFailures[.refused, default: 0] >= 1 }

        let restartedAt = ContinuousClock.now
        try server.start()
        let recovery = try fixture.await("db") { $0.isSessionUp }
        print("recover after restart: \(recovery.milliseconds) ms after the server accepted connections again")
        _ = restartedAt
        let after = fixture.series("db")
        #expect(after.outages == 1)
        #expect(after.outageDuration.count == 1)
        #expect(after.downtime > 0)
        #expect(after.resets == 1)
        let newStart = try #require(after.serverStartTime)
        #expect(newStart > startTime, "a new postmaster start time marks the restart")
    }

    /// A backoff that has grown long (here a step of 60 s after the first) does not hold the session back once
    /// the server listens again: the port check sees it and the session reconnects at once, with no connect
    /// attempt in between.
    @Test func aLongRefusedBackoffEndsWhenTheServerListensAgain() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let slow = BackoffConfig(initial: .milliseconds(100), max: .seconds(60), multiplier: 600, jitter: 0)
        let fixture = try MonitorFixture([try testTarget("db", dsn: server.dsn(password: Self.superuser), backoff: slow)])
        try fixture.await("db") { $0.isSessionUp }

        try server.stopFast()
        try fixture.await("db") { $0.connectionFailures[.refused, default: 0] >= 1 && $0.backoff == 60 }
        let waiting = fixture.series("db")
        try server.start()
        let recovery = try fixture.await("db", timeout: .seconds(20)) { $0.isSessionUp }
        print("recover from a 60 s backoff: \(recovery.milliseconds) ms after the server accepted connections again")
        let after = fixture.series("db")
        #expect(after.connectionAttempts - waiting.connectionAttempts <= 2, "the wake's connect, and one if starting up")
        #expect(after.outages == 1)
    }

    @Test func crashOfAnotherBackendIsACrashShutdown() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let fixture = try MonitorFixture([try testTarget("db", dsn: server.dsn(password: Self.superuser))])
        try fixture.await("db") { $0.isSessionUp }

        // A backend to crash: a psql session sleeping in the background.
        let sleeper = Thread { _ = try? server.psql("SELECT pg_sleep(30)", timeout: .seconds(40)) }
        sleeper.start()
        var victim = ""
        try eventually(timeout: .seconds(10)) {
            victim = try server.psql("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%' AND pid <> pg_backend_pid()")
            return !victim.isEmpty
        }
        let pid = try #require(pid_t(victim))
        #expect(kill(pid, SIGKILL) == 0)

        try fixture.await("db") { $0.totalDisconnects == 1 }
        #expect(fixture.series("db").disconnects[.crashShutdown] == 1, "\(fixture.series("db").disconnects)")
        try fixture.await("db", timeout: .seconds(30)) { $0.isSessionUp }
    }

    @Test func idleSessionTimeoutIsReportedWithItsReason() throws {
        let server = try TestPostgres.start(settings: ["idle_session_timeout": "300ms"])
        defer { server.cleanup() }
        let fixture = try MonitorFixture([
            try testTarget(
                "db", dsn: server.dsn(password: Self.superuser), probeInterval: .seconds(2),
                probeTimeout: .seconds(1))
        ])
        try fixture.await("db") { $0.disconnects[.idleTimeout] == 1 }
        #expect(fixture.series("db").resets == 1)
    }

    @Test func connectionFailuresAreClassified() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let closedPort = TestPostgres.freePort()
        let fixture = try MonitorFixture([
            try testTarget("wrong_password", dsn: server.dsn(password: "wrong"), loginInterval: .milliseconds(300)),
            try testTarget("missing_db", dsn: server.dsn(password: Self.superuser, database: "nope")),
            try testTarget("closed_port", dsn: "host=127.0.0.1 port=\(closedPort) user=postgres connect_timeout=5"),
            try testTarget("unknown_host", dsn: "host=no-such-host.invalid port=\(server.port) user=postgres"),
            try testTarget(
                "by_name", dsn: "host=localhost port=\(server.port) user=postgres password=\(Self.superuser)",
                loginInterval: .milliseconds(300)),
            try testTarget("tls_required", dsn: server.dsn(password: Self.superuser) + " sslmode=require"),
        ])
        try fixture.await("wrong_password") { $0.connectionFailures[.auth, default: 0] >= 1 }
        // A wrong password can lock an account: the retry waits at least a minute (60 s ± 20 % jitter).
        #expect(fixture.series("wrong_password").backoff >= 48)
        try fixture.await("wrong_password") { $0.loginFailures[.auth, default: 0] >= 1 && !$0.loginUp }
        try fixture.await("missing_db") { $0.connectionFailures[.databaseMissing, default: 0] >= 1 }
        try fixture.await("closed_port") { $0.connectionFailures[.refused, default: 0] >= 1 }
        try fixture.await("unknown_host") { $0.connectionFailures[.dns, default: 0] >= 1 }
        try fixture.await("by_name") { $0.isSessionUp && $0.loginUp }
        try fixture.await("tls_required") { $0.connectionFailures[.tls, default: 0] >= 1 }
        for name in ["wrong_password", "missing_db", "closed_port", "unknown_host", "tls_required"] {
            let series = fixture.series(name)
            #expect(series.state == .backoff || series.state == .connecting, "\(name)")
            #expect(series.probes == 0, "\(name) never got a session")
            #expect(series.connectionFailures[.other, default: 0] == 0, "\(name) has unclassified failures")
        }
        #expect(fixture.monitor.isReady, "every target has reported once")
    }

    /// No password to send is the exporter's problem, not the server's: nothing is sent, and it is not `auth`.
    @Test func missingPasswordIsPasswordUnavailableNotAuth() throws {
        let closedPort = TestPostgres.freePort()
        let dsn = "host=127.0.0.1 port=\(closedPort) user=monitor"
        let fixture = try MonitorFixture([
            try testTarget(
                "no_file", dsn: dsn, password: .file("/nonexistent/pgconn.password"),
                loginInterval: .milliseconds(300)),
            try testTarget("no_env", dsn: dsn, password: .environment("PGCONN_TEST_UNSET_PASSWORD")),
        ])
        try fixture.await("no_file") { $0.connectionFailures[.passwordUnavailable, default: 0] >= 1 }
        try fixture.await("no_file") { $0.loginFailures[.passwordUnavailable, default: 0] >= 1 }
        try fixture.await("no_env") { $0.connectionFailures[.passwordUnavailable, default: 0] >= 1 }
        for name in ["no_file", "no_env"] {
            let series = fixture.series(name)
            #expect(series.connectionFailures[.auth] == 0, "\(name)")
            #expect(series.connectionFailures[.refused] == 0, "\(name): the closed port was never tried")
        }
    }

    @Test func probeQueryErrorKeepsTheSession() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let fixture = try MonitorFixture([
            try testTarget("bad_query", dsn: server.dsn(password: Self.superuser), query: "SELECT * FROM no_such_table"),
            try testTarget("aborted_tx", dsn: server.dsn(password: Self.superuser), query: "BEGIN; SELECT 1/0"),
            try testTarget("wrong_role", dsn: server.dsn(password: Self.superuser), expect: .standby),
        ])
        try fixture.await("bad_query") { $0.probeFailures[.queryError, default: 0] >= 3 }
        let badQuery = fixture.series("bad_query")
        #expect(badQuery.state == .up)
        #expect(badQuery.totalDisconnects == 0 && badQuery.resets == 0, "a query error does not cost the session")
        #expect(badQuery.connectionAttempts == 1)

        try fixture.await("aborted_tx") { $0.probeFailures[.queryError, default: 0] >= 2 }
        let aborted = fixture.series("aborted_tx")
        #expect(aborted.resets == 0 && aborted.connectionAttempts == 1, "rolled back on the same connection")
        #expect(aborted.totalDisconnects == 0)

        try fixture.await("wrong_role") { $0.probeFailures[.readOnly, default: 0] >= 2 }
        #expect(fixture.series("wrong_role").inRecovery == false)
        #expect(!fixture.series("wrong_role").probeHealthy)
    }

    @Test func revokedPasswordShowsInLoginChecksWhileTheSessionStaysUp() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        try server.psql("CREATE ROLE monitor LOGIN PASSWORD 'first'")
        let passwordFile = server.rootDir.appendingPathComponent("monitor.password")
        try "first\n".write(to: passwordFile, atomically: true, encoding: .utf8)
        let fixture = try MonitorFixture([
            try testTarget(
                "db", dsn: "host=127.0.0.1 port=\(server.port) user=monitor dbname=postgres",
                password: .file(passwordFile.path), loginInterval: .milliseconds(300)),
        ])
        try fixture.await("db") { $0.isSessionUp && $0.loginUp }

        try server.psql("ALTER ROLE monitor PASSWORD 'second'")
        try fixture.await("db") { !$0.loginUp && $0.loginFailures[.auth, default: 0] >= 1 }
        let probes = fixture.series("db").probes
        try fixture.await("db") { $0.probes >= probes + 3 }
        let series = fixture.series("db")
        #expect(series.isSessionUp, "the established session still answers")
        #expect(series.isUp(now: .now()))

        try "second\n".write(to: passwordFile, atomically: true, encoding: .utf8)
        try fixture.await("db") { $0.loginUp }
    }

    @Test func fullConnectionLimitShowsInLoginChecksWhileTheSessionStaysUp() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        try server.psql("CREATE ROLE monitor LOGIN PASSWORD 'pw' CONNECTION LIMIT 1")
        let fixture = try MonitorFixture([
            try testTarget(
                "db", dsn: "host=127.0.0.1 port=\(server.port) user=monitor password=pw dbname=postgres",
                loginInterval: .milliseconds(300)),
        ])
        // The session takes the role's only slot; every login check is then turned away with 53300.
        try fixture.await("db") { $0.isSessionUp && $0.loginFailures[.tooManyConnections, default: 0] >= 2 }
        let series = fixture.series("db")
        #expect(!series.loginUp)
        #expect(series.isUp(now: .now()))
    }
}
