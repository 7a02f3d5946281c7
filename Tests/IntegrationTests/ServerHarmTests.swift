import Foundation
import Glibc
import PGConnCore
import PGConnPostgres
import Testing

/// The exporter must never harm what it watches: counted on the server's side (`pg_stat_activity`,
/// `log_connections`), not with the exporter's own counters. Each of these once failed.
@Suite(.serialized) struct ServerHarmTests {
    static let superuser = TestPostgres.superuserPassword

    /// Backends of `user` as the server sees them.
    func backends(_ server: TestPostgres, user: String, where condition: String = "true") throws -> Int {
        Int(try server.psql("SELECT count(*) FROM pg_stat_activity WHERE usename = '\(user)' AND \(condition)")) ?? -1
    }

    /// Holds an ACCESS EXCLUSIVE lock on `locked` for `seconds` from a psql session in the background.
    func holdLock(_ server: TestPostgres, seconds: Int) throws -> Thread {
        let holder = Thread {
            _ = try? server.psql(
                "BEGIN; LOCK TABLE locked IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(\(seconds)); COMMIT;",
                timeout: .seconds(Int64(seconds) + 30))
        }
        holder.start()
        try eventually(timeout: .seconds(10)) {
            try server.psql("SELECT count(*) FROM pg_locks WHERE relation = 'locked'::regclass AND granted") == "1"
        }
        return holder
    }

    /// A probe stuck on a lock used to stay on the server after its timeout, and the next probes joined it:
    /// 4 → 16 backends in 40 s, until the role's connection limit shut every login out. Now the server bounds it
    /// (`lock_timeout` from probe_timeout) and a cancel request follows a timeout: one backend, never a pile.
    @Test(arguments: [false, true])
    func probesStuckOnALockDoNotPileUp(userDisabledServerTimeouts: Bool) throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        try server.psql(
            """
            CREATE TABLE locked (id int);
            CREATE ROLE monitor LOGIN PASSWORD 'pw' CONNECTION LIMIT 5;
            GRANT SELECT ON locked TO monitor;
            """)
        // With the server's own timeouts turned off in the DSN, only the cancel request ends the stuck query.
        let options = userDisabledServerTimeouts ? " options='-c statement_timeout=0 -c lock_timeout=0'" : ""
        let fixture = try MonitorFixture([
            try testTarget(
                "db", dsn: "host=127.0.0.1 port=\(server.port) user=monitor password=pw dbname=postgres" + options,
                query: "SELECT count(*) FROM locked", probeInterval: .milliseconds(300),
                probeTimeout: .milliseconds(200), loginInterval: .milliseconds(500)),
        ])
        try fixture.await("db") { $0.isSessionUp }
        let holder = try holdLock(server, seconds: 6)
        defer { holder.cancel() }

        var most = 0
        let start = ContinuousClock.now
        try fixture.await("db", timeout: .seconds(20)) { series in
            let failed = series.probeFailures[.timeout, default: 0] + series.probeFailures[.queryError, default: 0]
            if let count = try? backends(server, user: "monitor") { most = max(most, count) }
            return failed >= 8
        }
        let waitingOnTheLock = try backends(server, user: "monitor", where: "wait_event_type = 'Lock'")
        print("lock held, server timeouts \(userDisabledServerTimeouts ? "off" : "on"): at most \(most) backends, "
            + "\(waitingOnTheLock) waiting on the lock after \(ContinuousClock.now - start)")
        #expect(most <= 3, "the session, a login check, and one being torn down at most")
        #expect(waitingOnTheLock <= 1)
        #expect(fixture.series("db").loginFailures[.tooManyConnections, default: 0] == 0, "logins were never shut out")
    }

    /// `BEGIN; SELECT 1/0; COMMIT` with a 1 s interval once made 1,562 connections in 5 s: reset, reconnect,
    /// probe at once, fail again. Now the failed transaction is rolled back on the same connection.
    @Test func aProbeFailingInsideATransactionMakesNoConnectionStorm() throws {
        let server = try TestPostgres.start(settings: ["log_connections": "on"])
        defer { server.cleanup() }
        let fixture = try MonitorFixture([
            try testTarget("storm", dsn: server.dsn(password: Self.superuser), query: "BEGIN; SELECT 1/0; COMMIT")
        ])
        try fixture.await("storm", timeout: .seconds(20)) { $0.probeFailures[.queryError, default: 0] >= 10 }
        let connections = server.serverLog().split(separator: "\n").filter {
            $0.contains("connection authorized") && $0.contains("application_name=pgconn_exporter")
                && !$0.contains("pgconn_exporter_login")
        }.count
        print("storm query: \(connections) session connections for \(fixture.series("storm").probes) probes")
        #expect(connections == 1)
        #expect(try backends(server, user: "postgres", where: "application_name = 'pgconn_exporter' AND state LIKE 'idle in transaction%'") == 0)
        #expect(fixture.series("storm").resets == 0)
    }

    /// `BEGIN; SELECT 1` succeeds but leaves the session in a transaction; the server here ends sessions idle in
    /// a transaction after 100 ms, so a session left so would be lost within a probe interval.
    @Test func aSuccessfulProbeNeverLeavesTheSessionIdleInATransaction() throws {
        let server = try TestPostgres.start(settings: ["idle_in_transaction_session_timeout": "100ms"])
        defer { server.cleanup() }
        let fixture = try MonitorFixture([
            try testTarget("open_tx", dsn: server.dsn(password: Self.superuser), query: "BEGIN; SELECT 1")
        ])
        try fixture.await("open_tx") { $0.probes >= 10 }
        let series = fixture.series("open_tx")
        #expect(series.probeHealthy && series.totalDisconnects == 0 && series.connectionAttempts == 1)
    }

    /// `COPY (SELECT 1) TO STDOUT` once took a whole core and 1.8 GB in 6 s and stopped the other targets.
    @Test func copyAndHugeRepliesFailTheProbeWithinBounds() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let fixture = try MonitorFixture([
            try testTarget("copy", dsn: server.dsn(password: Self.superuser), query: "COPY (SELECT 1) TO STDOUT"),
            try testTarget(
                "huge", dsn: server.dsn(password: Self.superuser),
                query: "SELECT repeat('x', 1000) FROM generate_series(1, 5000)"),
            try testTarget("healthy", dsn: server.dsn(password: Self.superuser)),
        ])
        try fixture.await("copy") { $0.probeFailures[.queryError, default: 0] >= 2 && $0.resets >= 2 }
        try fixture.await("huge") { $0.probeFailures[.queryError, default: 0] >= 2 && $0.resets >= 2 }
        let probes = fixture.series("healthy").probes
        try fixture.await("healthy") { $0.isSessionUp && $0.probes >= probes + 5 }
        #expect(fixture.series("copy").probeHealthy == false)
    }

    /// A FIFO as password_file once froze every target: it was opened and read with blocking calls on the loop.
    @Test func aFIFOPasswordFileIsRefusedAndBlocksNothing() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let fifo = server.rootDir.appendingPathComponent("password.fifo").path
        #expect(mkfifo(fifo, 0o600) == 0)
        let fixture = try MonitorFixture([
            try testTarget("fifo", dsn: "host=127.0.0.1 port=\(server.port) user=postgres", password: .file(fifo)),
            try testTarget("healthy", dsn: server.dsn(password: Self.superuser)),
        ])
        try fixture.await("healthy") { $0.isSessionUp && $0.probes >= 5 }
        try fixture.await("fifo") { $0.connectionFailures[.passwordUnavailable, default: 0] >= 1 }
        #expect(fixture.series("fifo").connectionFailures[.auth, default: 0] == 0, "the server never saw an attempt")
    }

    /// The role query used to be appended after the user's query, so a trailing comment swallowed it.
    @Test func theRoleCheckSurvivesACommentInTheQuery() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let fixture = try MonitorFixture([
            try testTarget(
                "commented", dsn: server.dsn(password: Self.superuser), query: "SELECT 1 -- health check",
                expect: .primary)
        ])
        try fixture.await("commented") { $0.probes >= 3 }
        let series = fixture.series("commented")
        #expect(series.probeHealthy && series.probeFailures.values.reduce(0, +) == 0 && series.inRecovery == false)
    }
}
