import Testing

@testable import PGConnCore

/// `/health` from series: the policy, the role filter, and the exact text and JSON lines.
@Suite struct HealthReportTests {
    static let now = MonotonicInstant(nanoseconds: 100_000_000_000)
    static let refused = Failure(reason: .refused, message: "Connection refused")
    static let auth = Failure(reason: .auth, sqlstate: "28P01", message: "password authentication failed")

    static func series(
        _ name: String, up: Bool, inRecovery: Bool? = false, login: Bool? = nil, failures: Int = 0
    ) -> TargetSeries {
        var config = SessionStateMachineTests.config
        config.name = name
        config.loginInterval = login == nil ? .zero : .seconds(60)
        var series = TargetSeries(config: config)
        series.state = up ? .up : .backoff
        series.probeHealthy = up
        series.lastSuccessAt = up ? now : nil
        series.lastProbeDuration = .microseconds(1234)
        series.inRecovery = inRecovery
        series.healthSince = 1_764_309_600  // 2025-11-28T06:00:00Z
        series.consecutiveFailures = failures
        if !up { series.lastFailure = refused }
        if let login {
            series.loginChecked = true
            series.loginUp = login
            series.loginFailure = login ? nil : auth
        }
        return series
    }

    static let fleet = [
        series("primary", up: true, login: true), series("replica", up: false, inRecovery: true, failures: 12),
        series("locked", up: true, inRecovery: true, login: false),
    ]

    func report(_ policy: HealthPolicy) -> [TargetHealth] { HealthReport.targets(Self.fleet, policy: policy, now: Self.now) }

    @Test(arguments: [
        (HealthPolicy(require: .all), false), (HealthPolicy(require: .any), true), (HealthPolicy(require: .atLeast(2)), true),
        (HealthPolicy(require: .atLeast(3)), false), (HealthPolicy(require: .atLeast(2), login: true), false),
        (HealthPolicy(require: .all, targets: ["primary", "locked"]), true),
        (HealthPolicy(require: .all, targets: ["primary", "locked"], login: true), false),
        (HealthPolicy(require: .any, targets: ["replica"]), false),
    ])
    func thePolicyHolds(policy: HealthPolicy, expected: Bool) {
        #expect(HealthReport.holds(report(policy), policy: policy) == expected)
    }

    @Test func aTargetIsHealthyWhenUpAndNotStale() {
        var stale = Self.series("stale", up: true)
        stale.lastSuccessAt = Self.now + .seconds(-13)  // staleAfter is 12 s for this config
        let health = HealthReport.targets([stale], policy: HealthPolicy(), now: Self.now)
        #expect(health.first?.healthy == false && health.first?.up == false)
    }

    @Test func theRoleFilterNeedsUpAndThatRole() {
        let targets = report(HealthPolicy())
        #expect(targets[0].isUp(inRole: "primary") && !targets[0].isUp(inRole: "standby"))
        #expect(!targets[1].isUp(inRole: "standby"), "a standby that is down is not a standby to route to")
        #expect(targets[2].isUp(inRole: "standby"), "login checks only count with health.login")
    }

    @Test func textHasOneLinePerTarget() {
        let text = HealthReport.text(report(HealthPolicy(login: true)))
        #expect(
            text == """
                primary up 1.2ms role=primary since 2025-11-28T06:00:00.000Z
                replica down reason=refused sqlstate= role=standby since 2025-11-28T06:00:00.000Z failures=12
                locked down login reason=auth sqlstate=28P01 role=standby since 2025-11-28T06:00:00.000Z failures=0

                """)
    }

    @Test func jsonCarriesEveryField() {
        let policy = HealthPolicy(require: .atLeast(2), targets: ["primary", "replica"])
        let targets = report(policy)
        let json = HealthReport.json(Array(targets.prefix(2)), policy: policy, healthy: false)
        #expect(
            json == #"{"healthy":false,"require":"2","targets":[{"name":"primary","healthy":true,"up":true,"state":"up","role":"primary","since":"2025-11-28T06:00:00.000Z","latency_seconds":0.001234,"consecutive_failures":0,"login_up":true,"counted":true,"reason":null,"sqlstate":null,"message":null},{"name":"replica","healthy":false,"up":false,"state":"backoff","role":"standby","since":"2025-11-28T06:00:00.000Z","latency_seconds":0.001234,"consecutive_failures":12,"login_up":null,"counted":true,"reason":"refused","sqlstate":null,"message":"Connection refused"}]}"#
                + "\n")
    }

    @Test(arguments: [
        (0.0, "1970-01-01T00:00:00.000Z"), (951_782_400.5, "2000-02-29T00:00:00.500Z"),
        (1_796_216_046.4737, "2026-12-02T12:54:06.474Z"), (4_102_444_799.999, "2099-12-31T23:59:59.999Z"),
    ])
    func rfc3339(seconds: Double, expected: String) {
        #expect(RFC3339.format(seconds) == expected)
    }

    @Test func jsonStringsAreEscaped() {
        #expect(JSONText.quoted("a\"b\\c\nd\u{01}") == #""a\"b\\c\nd\u0001""#)
    }
}
