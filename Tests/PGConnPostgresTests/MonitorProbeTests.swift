import Foundation
import PGConnSync
import PGConnTestSupport
import Synchronization
import Testing

@testable import PGConnCore
@testable import PGConnPostgres

/// On-demand probes (`/probe`) on the real loop against the scripted server: one connection per probed target,
/// deadlines, cancels, joining and the concurrency bound.
@Suite(.serialized) struct MonitorProbeTests {
    typealias Harness = MonitorSeamTests.Harness
    static let ok = MonitorSeamTests.ok

    /// Answers the on-demand probe's role query with `inRecovery`, everything else with one row.
    static func server(
        inRecovery: String = "f",
        connect: @escaping @Sendable (String) -> ScriptedServer.ConnectScript = { _ in .ready },
        query: @escaping @Sendable (String, String) -> ScriptedServer.QueryScript? = { _, _ in nil }
    ) -> ScriptedServer {
        ScriptedServer(connect: connect) { dsn, sql in
            if let scripted = query(dsn, sql) { return scripted }
            if sql.hasSuffix("SELECT pg_catalog.pg_is_in_recovery()") {
                return .reply([
                    ok, QueryResultSummary(status: .tuples),
                    QueryResultSummary(status: .tuples, firstValue: inRecovery),
                ])
            }
            return .reply([ok])
        }
    }

    /// A discovered target (a module's), on a host no configured target uses.
    static func discovered(_ host: String, expect: ExpectedRole = .any) -> TargetConfig {
        var config = MonitorSeamTests.target("m/\(host):5432", host: host)
        config.expect = expect
        return config
    }

    /// Collects probe results, in the order they arrive.
    final class Results: Sendable {
        private let results = Lock<[ProbeResult]>([])
        var all: [ProbeResult] { results.withLock { $0 } }
        func add(_ result: ProbeResult) { results.withLock { $0.append(result) } }
    }

    @discardableResult
    static func probe(
        _ harness: Harness, _ subject: ProbeOrder.Subject, timeout: Duration = .milliseconds(500), into results: Results
    ) -> Bool {
        harness.monitor.probe(ProbeOrder(subject, timeout: timeout)) { results.add($0) }
    }

    @Test func aConfiguredTargetIsProbedOnAFreshConnectionThatIsClosed() throws {
        let server = Self.server()
        let harness = try Harness([MonitorSeamTests.target("db")], server: server)
        try harness.await("session up") { harness.series("db").probeHealthy }
        let before = server.snapshot
        let results = Results()
        #expect(Self.probe(harness, .configured("db"), into: results))
        try harness.await("answered") { results.all.count == 1 }
        let result = try #require(results.all.first)
        #expect(result.failure == nil)
        #expect(result.serverVersion == "15.0 (scripted)")
        #expect(result.inRecovery == false)
        #expect(result.duration >= result.connectDuration)
        #expect(server.snapshot.started == before.started + 1)
        let sent = server.snapshot.queries.dropFirst(before.queries.count)
        #expect(sent.contains("SELECT 1\n;\nSELECT pg_catalog.pg_is_in_recovery()"))
        try harness.await("probe connection closed") { server.snapshot.open == 1 }  // the session's only
        #expect(result.trace.map(\.text).contains { $0.hasPrefix("connected, server_version 15.0") })
        #expect(harness.gauge("pgconn_exporter_probes_in_progress") == 0)
    }

    @Test func aServerInTheWrongRoleFailsAsReadOnly() throws {
        let harness = try Harness([], server: Self.server(inRecovery: "t"))
        let results = Results()
        Self.probe(harness, .discovered(Self.discovered("198.51.100.1", expect: .primary)), into: results)
        try harness.await("answered") { results.all.count == 1 }
        #expect(results.all[0].failure?.reason == .readOnly)
        #expect(results.all[0].inRecovery == true)
    }

    @Test func anUnknownConfiguredNameFailsWithoutConnecting() throws {
        let server = Self.server()
        let harness = try Harness([], server: server)
        let results = Results()
        Self.probe(harness, .configured("nope"), into: results)
        try harness.await("answered") { results.all.count == 1 }
        #expect(results.all[0].failure?.message.contains("no configured target named nope") == true)
        #expect(server.snapshot.started == 0)
    }

    @Test func aHangingConnectTimesOutWithinTheProbesTimeout() throws {
        let server = Self.server(connect: { _ in .hang })
        let harness = try Harness([], server: server)
        let results = Results()
        let started = ContinuousClock.now
        Self.probe(harness, .discovered(Self.discovered("198.51.100.2")), timeout: .milliseconds(150), into: results)
        try harness.await("answered") { results.all.count == 1 }
        let elapsed = ContinuousClock.now - started
        let failure = try #require(results.all[0].failure)
        #expect(failure.reason == .timeout)
        #expect(failure.message.contains("while connecting"))
        #expect(elapsed >= .milliseconds(150))
        #expect(results.all[0].serverVersion == nil)
        try harness.await("connection closed") { server.snapshot.open == 0 }
    }

    @Test func aHangingQueryTimesOutAndIsCancelled() throws {
        let server = Self.server(query: { _, sql in sql.contains("pg_sleep") ? .hang : nil })
        var config = Self.discovered("198.51.100.3")
        config.query = "SELECT pg_sleep(60)"
        let harness = try Harness([], server: server)
        let results = Results()
        Self.probe(harness, .discovered(config), timeout: .milliseconds(150), into: results)
        try harness.await("answered") { results.all.count == 1 }
        let failure = try #require(results.all[0].failure)
        #expect(failure.reason == .timeout)
        #expect(failure.message.contains("running the query"))
        try harness.await("cancel sent and connection closed") {
            server.snapshot.cancels == 1 && server.snapshot.open == 0
        }
        #expect(results.all[0].trace.last?.text == "closed, cancel request sent for the query")
    }

    @Test func requestsForTheSameTargetShareOneConnectionEachWithItsOwnDeadline() throws {
        let server = Self.server(connect: { _ in .hang })
        let harness = try Harness([], server: server)
        let config = Self.discovered("198.51.100.4")
        let long = Results()
        let short = Results()
        Self.probe(harness, .discovered(config), timeout: .milliseconds(400), into: long)
        try harness.await("first connecting") { server.snapshot.started == 1 }
        Self.probe(harness, .discovered(config), timeout: .milliseconds(100), into: short)
        try harness.await("the short one answered") { short.all.count == 1 }
        #expect(long.all.isEmpty)
        #expect(short.all[0].failure?.reason == .timeout)
        try harness.await("the long one answered") { long.all.count == 1 }
        #expect(long.all[0].failure?.reason == .timeout)
        #expect(server.snapshot.started == 1)
    }

    @Test func probesBeyondTheLimitAreRejectedAndCounted() throws {
        let server = Self.server(connect: { _ in .hang })
        let harness = try Harness([], server: server, maxConcurrentProbes: 2)
        let results = Results()
        #expect(Self.probe(harness, .discovered(Self.discovered("198.51.100.5")), timeout: .seconds(5), into: results))
        #expect(Self.probe(harness, .discovered(Self.discovered("198.51.100.6")), timeout: .seconds(5), into: results))
        #expect(!Self.probe(harness, .discovered(Self.discovered("198.51.100.7")), timeout: .seconds(5), into: results))
        #expect(harness.exposition().contains("pgconn_exporter_probes_rejected_total 1\n"))
        #expect(harness.gauge("pgconn_exporter_probes_in_progress") == 2)
        harness.monitor.stop()
        try harness.await("both answered at the stop") { results.all.count == 2 }
        #expect(results.all.allSatisfy { $0.failure?.message == "the exporter is shutting down" })
        #expect(harness.gauge("pgconn_exporter_probes_in_progress") == 0)
    }
}

extension MonitorProbeTests {
    @Test func aFailedLoginIsNotRetriedByTheNextProbes() throws {
        let auth = Failure(reason: .auth, sqlstate: "28P01", message: "password authentication failed for user \"u\"")
        let server = Self.server(connect: { _ in .fail(auth) })
        let harness = try Harness([], server: server)
        let config = Self.discovered("198.51.100.8")
        let results = Results()
        Self.probe(harness, .discovered(config), into: results)
        try harness.await("first answered") { results.all.count == 1 }
        for _ in 0..<5 { Self.probe(harness, .discovered(config), into: results) }
        try harness.await("all answered") { results.all.count == 6 }
        #expect(results.all.allSatisfy { $0.failure?.reason == .auth })
        #expect(server.snapshot.started == 1, "one login attempt, not six")
        #expect(
            results.all[1].trace.first?.text.hasPrefix("not connecting: the last probe's credentials failed") == true)
        // Another target is not held back.
        Self.probe(harness, .discovered(Self.discovered("198.51.100.9")), into: results)
        try harness.await("the other answered") { results.all.count == 7 }
        #expect(server.snapshot.started == 2)
    }
}
