import Foundation
import PGConnCore
import PGConnPostgres
import Testing

/// Targets behind PgBouncer (transaction pooling) and on its admin console, against real servers.
///
/// The console cannot answer the server-facts query, which proves the rule that a target unable to report a
/// fact still works with the fact absent. Each test starts its own PostgreSQL and PgBouncer.
@Suite(.serialized) struct PgBouncerTests {
    /// The session's server backend(s) behind PgBouncer: TCP from 127.0.0.1 (psql in these tests uses the socket).
    static let pooledBackends =
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'client backend' AND client_addr = '127.0.0.1'"

    @Test func pooledTargetWorksAndReportsTheServersFacts() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let bouncer = try TestPgBouncer.start(in: server)
        defer { bouncer.cleanup() }
        let fixture = try MonitorFixture([try testTarget("pooled", dsn: bouncer.dsn())])

        try fixture.await("pooled") { $0.isSessionUp && $0.probes >= 3 && $0.serverStartTime != nil }
        let series = fixture.series("pooled")
        #expect(series.isUp(now: .now()))
        #expect(series.probeFailures.values.reduce(0, +) == 0)
        #expect(series.connectionAttempts == 1 && series.resets == 0 && series.totalDisconnects == 0)

        // The facts are the server's, passed through: PgBouncer relays the server's `server_version` parameter
        // status and the facts query runs on a pooled server connection.
        let version = try server.psql("SHOW server_version")
        let startTime = try #require(Double(try server.psql(
            "SELECT extract(epoch FROM pg_catalog.pg_postmaster_start_time())::float8")))
        #expect(series.serverVersion == version)
        #expect(series.inRecovery == false)
        #expect(abs((series.serverStartTime ?? 0) - startTime) < 0.001)

        let text = render(fixture)
        #expect(text.contains("pgconn_up{target=\"pooled\"} 1\n"), "\(text)")
        #expect(text.contains("pgconn_server_in_recovery{target=\"pooled\"} 0\n"))
        #expect(samples(text, "pgconn_server_start_time_seconds", target: "pooled").count == 1)
        #expect(samples(text, "pgconn_server_info", target: "pooled") == [
            "pgconn_server_info{target=\"pooled\",server_version=\"\(version)\"} 1",
        ])
    }

    @Test func adminConsoleTargetWorksWithoutTheFacts() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let bouncer = try TestPgBouncer.start(in: server)
        defer { bouncer.cleanup() }
        let fixture = try MonitorFixture([
            try testTarget("console", dsn: bouncer.dsn(database: "pgbouncer"), query: "SHOW VERSION"),
        ])

        // The console rejects the facts query (`ERROR: 08P01: invalid command 'SELECT ...', use SHOW HELP`) but
        // keeps the connection; the monitor leaves the facts out and goes on probing.
        try fixture.await("console") { $0.isSessionUp && $0.probes >= 5 }
        let series = fixture.series("console")
        #expect(series.isUp(now: .now()))
        #expect(series.probeFailures.values.reduce(0, +) == 0, "\(series.probeFailures)")
        #expect(series.connectionAttempts == 1)
        #expect(series.resets == 0 && series.totalDisconnects == 0)
        #expect(series.consecutiveFailures == 0)
        #expect(series.inRecovery == nil)
        #expect(series.serverStartTime == nil)
        // The console reports its own `server_version` parameter status: `<pgbouncer version>/bouncer`.
        let bouncerVersion = try TestPgBouncer.installedVersion()
        #expect(series.serverVersion == "\(bouncerVersion)/bouncer")
        print("pgbouncer console server_version: \(series.serverVersion ?? "nil")")

        let text = render(fixture)
        #expect(text.contains("pgconn_up{target=\"console\"} 1\n"), "\(text)")
        #expect(samples(text, "pgconn_server_in_recovery", target: "console").isEmpty)
        #expect(samples(text, "pgconn_server_start_time_seconds", target: "console").isEmpty)
    }

    @Test func terminatedServerBackendIsInvisibleToTheClient() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let bouncer = try TestPgBouncer.start(in: server)
        defer { bouncer.cleanup() }
        // A longer interval than usual: the backend is terminated while idle in the pool, not during a probe.
        let fixture = try MonitorFixture([
            try testTarget("pooled", dsn: bouncer.dsn(), probeInterval: .milliseconds(500), probeTimeout: .seconds(1)),
        ])
        try fixture.await("pooled") { $0.isSessionUp && $0.probes >= 2 }
        let victim = try server.psql(Self.pooledBackends)
        #expect(!victim.isEmpty && !victim.contains("\n"), "one pooled server connection, got \(victim)")
        let before = fixture.series("pooled")

        #expect(try server.psql("SELECT pg_catalog.pg_terminate_backend(\(victim))") == "t")

        // In transaction pooling the server connection is linked to the client only during a transaction. Between
        // probes it idles in PgBouncer's pool, so the terminated backend's 57P01 reaches PgBouncer, which drops
        // that server connection; the client connection is untouched and the next probe gets a fresh server
        // connection. The user sees nothing: no failed probe, no disconnect, no reset, the same session.
        // (Were the backend killed during a probe, PgBouncer would close the client connection instead.)
        try fixture.await("pooled") { $0.probes >= before.probes + 3 }
        var replacement = ""
        try eventually(timeout: .seconds(10)) {
            replacement = try server.psql(Self.pooledBackends)
            return !replacement.isEmpty && replacement != victim
        }
        let after = fixture.series("pooled")
        #expect(after.isSessionUp)
        #expect(after.probeFailures.values.reduce(0, +) == 0, "\(after.probeFailures)")
        #expect(after.totalDisconnects == 0, "\(after.disconnects)")
        #expect(after.resets == 0)
        #expect(after.connectionAttempts == 1)
        #expect(after.outages == 0)
        #expect(after.sessionStart == before.sessionStart)
    }

    @Test func stoppedPgBouncerIsALostSessionThenRefusedConnections() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let bouncer = try TestPgBouncer.start(in: server)
        defer { bouncer.cleanup() }
        let fixture = try MonitorFixture([try testTarget("pooled", dsn: bouncer.dsn())])
        try fixture.await("pooled") { $0.isSessionUp }

        // SIGTERM is PgBouncer's immediate shutdown: it closes the client socket without an error message, so
        // libpq reports "server closed the connection unexpectedly".
        try bouncer.stop()
        try fixture.await("pooled") { $0.totalDisconnects == 1 }
        let lost = fixture.series("pooled")
        let reasons = lost.disconnects.filter { $0.value > 0 }.map(\.key)
        #expect(reasons == [.connectionLost], "classified, got \(lost.disconnects)")
        #expect(!lost.isUp(now: .now()))

        try fixture.await("pooled") { $0.connectionFailures[.refused, default: 0] >= 2 }
        let after = fixture.series("pooled")
        let failures = after.connectionFailures.filter { $0.value > 0 }.map(\.key)
        #expect(failures == [.refused], "\(after.connectionFailures)")
        #expect(after.state == .backoff || after.state == .connecting)
        #expect(after.resets == 1)
    }

    @Test func consoleRejectingTheProbeQueryKeepsTheSession() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let bouncer = try TestPgBouncer.start(in: server)
        defer { bouncer.cleanup() }
        // The default `SELECT 1` on the console: `ERROR: 08P01: invalid command 'SELECT 1', use SHOW HELP`, and
        // PgBouncer keeps the connection, like PostgreSQL after a failed query.
        let fixture = try MonitorFixture([try testTarget("console", dsn: bouncer.dsn(database: "pgbouncer"))])
        try fixture.await("console") { $0.probes >= 3 }
        let series = fixture.series("console")
        #expect(series.probeFailures.filter { $0.value > 0 }.count == 1, "one reason: \(series.probeFailures)")
        // An ERROR with a connection-class SQLSTATE on a connection that goes on is a query error, not a loss.
        #expect(series.probeFailures[.queryError, default: 0] >= 3, "\(series.probeFailures)")
        #expect(series.totalDisconnects == 0, "\(series.disconnects)")
        #expect(series.resets == 0)
        #expect(series.connectionAttempts == 1)
    }

    // MARK: Metrics text

    private func render(_ fixture: MonitorFixture) -> String {
        String(decoding: fixture.metrics.render(wallClock: Date().timeIntervalSince1970, now: .now(), process: nil), as: UTF8.self)
    }

    /// The sample lines of `family` for `target`.
    private func samples(_ text: String, _ family: String, target: String) -> [String] {
        text.split(separator: "\n").map(String.init).filter { $0.hasPrefix("\(family){target=\"\(target)\"") }
    }
}
