import Testing

@testable import PGConnCore

/// What `/probe` answers: only `probe_*` families, the failure's reason, the server's facts where it answered.
struct ProbeResultTests {
    static let row = QueryResultSummary(status: .tuples, firstValue: "1")
    static func role(_ value: String) -> QueryResultSummary { QueryResultSummary(status: .tuples, firstValue: value) }

    @Test func aSuccessfulProbeHasTheServersFactsAndNoFailure() {
        let result = ProbeResult(
            failure: nil, duration: .milliseconds(12), connectDuration: .milliseconds(9),
            queryDuration: .milliseconds(2),
            serverVersion: "15.14 (Debian 15.14-0+deb12u1)", inRecovery: false)
        let text = String(decoding: result.exposition(), as: UTF8.self)
        #expect(text.contains("\nprobe_success 1\n"))
        #expect(text.contains("\nprobe_duration_seconds 0.012\n"))
        #expect(text.contains("\nprobe_connect_duration_seconds 0.009\n"))
        #expect(text.contains("\nprobe_query_duration_seconds 0.002\n"))
        #expect(text.contains("\nprobe_server_info{server_version=\"15.14 (Debian 15.14-0+deb12u1)\"} 1\n"))
        #expect(text.contains("\nprobe_server_in_recovery 0\n"))
        #expect(!text.contains("probe_failure_info"))
        let families = text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map {
            $0.split(separator: " ")[2]
        }
        #expect(families.allSatisfy { $0.hasPrefix("probe_") })
        #expect(families.count == 6)
    }

    @Test func aFailedConnectHasItsReasonAndNoServerFacts() {
        let result = ProbeResult(
            failure: Failure(reason: .refused, message: "connection refused"), duration: .milliseconds(1),
            connectDuration: .milliseconds(1))
        let text = String(decoding: result.exposition(), as: UTF8.self)
        #expect(text.contains("\nprobe_success 0\n"))
        #expect(text.contains("\nprobe_failure_info{reason=\"refused\"} 1\n"))
        #expect(!text.contains("probe_server_info"))
        #expect(!text.contains("probe_server_in_recovery"))
        #expect(text.contains("\nprobe_query_duration_seconds 0\n"))
    }

    @Test func theReplyIsJudgedAgainstTheExpectedRole() {
        let standby = QueryReply(results: [Self.row, Self.role("t")])
        #expect(ProbeResult.evaluate(standby, expect: .any) == (nil, true))
        #expect(ProbeResult.evaluate(standby, expect: .standby) == (nil, true))
        let wrong = ProbeResult.evaluate(standby, expect: .primary)
        #expect(wrong.failure?.reason == .readOnly)
        #expect(wrong.inRecovery == true)
        let primary = QueryReply(results: [Self.row, Self.role("f")])
        #expect(ProbeResult.evaluate(primary, expect: .standby).failure?.reason == .readOnly)
        let failed = QueryReply(results: [
            QueryResultSummary(status: .error, sqlstate: "42P01", message: "relation does not exist")
        ])
        #expect(ProbeResult.evaluate(failed, expect: .any).failure?.reason == .queryError)
        let lost = QueryReply(
            results: [], connectionBad: true, errorMessage: "server closed the connection unexpectedly")
        #expect(ProbeResult.evaluate(lost, expect: .any).failure?.reason == .connectionLost)
    }

    @Test func theDebugTextHasTheTraceThenTheMetrics() {
        let result = ProbeResult(
            failure: Failure(
                reason: .timeout, message: "no answer within 1s while connecting (TCP, TLS, authentication)"),
            duration: .seconds(1),
            trace: [.init(at: .zero, text: "probing db"), .init(at: .microseconds(1500), text: "connecting")])
        let text = result.debugText(describing: "db")
        #expect(text.hasPrefix("Probe of db\n\nTrace:\n     0.0ms  probing db\n     1.5ms  connecting\n"))
        #expect(text.contains("Metrics that would have been returned:\n# HELP probe_success"))
        #expect(text.contains("probe_failure_info{reason=\"timeout\"} 1"))
    }

    @Test func theOnDemandQueryAlwaysAsksForTheRole() {
        #expect(
            SessionQueries.onDemandProbe(
                for: TargetConfig(
                    name: "t", dsn: "", summary: DSNSummary(host: "", port: "", database: "", user: "", sslmode: ""),
                    query: "SELECT 1 -- x"))
                == "SELECT 1 -- x\n;\nSELECT pg_catalog.pg_is_in_recovery()")
    }
}

/// On-demand probes never hammer credentials that just failed.
struct ProbeCredentialHoldTests {
    static let auth = Failure(reason: .auth, sqlstate: "28P01", message: "password authentication failed")
    static let t0 = MonotonicInstant(nanoseconds: 1_000_000_000)

    @Test func aCredentialFailureHoldsTheKeyBackDoublingUpToFifteenMinutes() {
        var hold = ProbeCredentialHold()
        hold.record("k", failure: Self.auth, now: Self.t0)
        #expect(hold.holding("k", now: Self.t0 + .seconds(59))?.failure == Self.auth)
        #expect(hold.holding("k", now: Self.t0 + .seconds(60)) == nil)
        #expect(hold.holding("other", now: Self.t0) == nil)
        var now = Self.t0 + .seconds(60)
        var delays: [Duration] = []
        for _ in 0..<6 {
            hold.record("k", failure: Self.auth, now: now)
            delays.append(hold.holding("k", now: now)!.remaining)
            now = now + delays.last!
        }
        #expect(delays == [.seconds(120), .seconds(240), .seconds(480), .seconds(900), .seconds(900), .seconds(900)])
    }

    @Test func anyOtherOutcomeEndsTheHold() {
        var hold = ProbeCredentialHold()
        hold.record("k", failure: Self.auth, now: Self.t0)
        hold.record("k", failure: nil, now: Self.t0 + .seconds(1))
        #expect(hold.holding("k", now: Self.t0 + .seconds(2)) == nil)
        hold.record("k", failure: Failure(reason: .databaseMissing, message: "x"), now: Self.t0)
        #expect(hold.holding("k", now: Self.t0)?.failure.reason == .databaseMissing)
        hold.record("k", failure: Failure(reason: .refused, message: "x"), now: Self.t0)
        #expect(hold.holding("k", now: Self.t0) == nil)
        #expect(hold.count == 0)
    }

    @Test func theTableIsBounded() {
        var hold = ProbeCredentialHold()
        for index in 0...ProbeCredentialHold.limit {
            hold.record("k\(index)", failure: Self.auth, now: Self.t0 + .milliseconds(index))
        }
        #expect(hold.count == ProbeCredentialHold.limit)
        #expect(hold.holding("k0", now: Self.t0 + .seconds(11)) == nil, "the hold that ends first was dropped")
        #expect(hold.holding("k\(ProbeCredentialHold.limit)", now: Self.t0 + .seconds(11)) != nil)
    }
}
