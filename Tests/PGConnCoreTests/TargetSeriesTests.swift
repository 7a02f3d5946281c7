import Testing

@testable import PGConnCore

/// Every observation changes exactly the fields it should; reason counters start at 0; `isUp` goes stale.
@Suite struct TargetSeriesTests {
    static let config = TargetConfig(
        name: "primary", dsn: "postgresql://monitor@db1:5432/postgres?sslmode=verify-full",
        summary: DSNSummary(host: "db1", port: "5432", database: "postgres", user: "monitor", sslmode: "verify-full"),
        probeInterval: .seconds(5), probeTimeout: .seconds(2), loginInterval: .seconds(60),
        backoff: BackoffConfig(initial: .seconds(1), max: .seconds(8), multiplier: 2, jitter: 0),
        labels: [("cluster", "main"), ("zone", "b")])

    static let refused = Failure(reason: .refused, message: "Connection refused")
    static let terminated = Failure(reason: .adminShutdown, sqlstate: "57P01", message: "terminating connection")
    static let syntax = Failure(reason: .queryError, sqlstate: "42601", message: "syntax error")
    static let badPassword = Failure(reason: .auth, sqlstate: "28P01", message: "password authentication failed")

    /// Wall clock of the base series' events, and of every observation under test.
    static let before = 1_700_000_000.0
    static let now = 1_700_000_100.0

    /// A series whose session is up: connected, facts read, one probe answered, all at `before`.
    static func baseSeries() -> TargetSeries {
        var series = TargetSeries(config: config)
        let observations: [SessionStateMachine.Observation] = [
            .connectionAttempt, .stateChanged(from: nil, to: .connecting, failure: nil),
            .connected(duration: .milliseconds(10)), .stateChanged(from: .connecting, to: .up, failure: nil),
            .facts(ServerFacts(version: "15.18", inRecovery: false, startTime: 1_699_000_000)),
            .probeSucceeded(duration: .milliseconds(1), inRecovery: false), .healthChanged(up: true, failure: nil),
        ]
        for observation in observations { series.apply(observation, wallClock: before) }
        series.state = .up  // what sync(with:) copies from an up machine
        series.probeHealthy = true
        return series
    }

    // MARK: - Configuration-derived fields

    @Test func initTakesLabelsStalenessAndLoginFromTheConfig() {
        let series = TargetSeries(config: Self.config)
        #expect(series.name == "primary")
        #expect(series.infoLabels.map(\.key) == ["host", "port", "database", "user", "sslmode", "cluster", "zone"])
        #expect(series.infoLabels.map(\.value) == ["db1", "5432", "postgres", "monitor", "verify-full", "main", "b"])
        #expect(series.staleAfter == .seconds(12), "probe_interval × 2 + probe_timeout")
        #expect(series.loginEnabled)

        var config = Self.config
        config.loginInterval = .zero
        config.probeInterval = .milliseconds(500)
        config.probeTimeout = .milliseconds(250)
        let other = TargetSeries(config: config)
        #expect(!other.loginEnabled)
        #expect(other.staleAfter == .milliseconds(1250))
    }

    @Test func roleChangesCountOnlyChangesFromAKnownRole() {
        var series = TargetSeries(config: Self.config)
        series.apply(.facts(ServerFacts(inRecovery: true)), wallClock: Self.now)
        #expect(series.roleChanges == 0, "the first role read is no change")
        series.apply(.probeSucceeded(duration: .milliseconds(1), inRecovery: true), wallClock: Self.now)
        #expect(series.roleChanges == 0)
        series.apply(.probeSucceeded(duration: .milliseconds(1), inRecovery: false), wallClock: Self.now)
        #expect(series.roleChanges == 1, "promoted under the live session")
        series.apply(.facts(ServerFacts(version: "16")), wallClock: Self.now)
        #expect(series.roleChanges == 1 && series.inRecovery == false, "no role read: nothing changes")
    }

    @Test func switchFamiliesAreForTargetsWithSeveralHostsOrThatSwitched() {
        var config = Self.config
        #expect(!TargetSeries(config: config).showsSwitches)
        config.summary.host = "db1,db2"
        #expect(TargetSeries(config: config).showsSwitches)
        var single = TargetSeries(config: Self.config)
        single.apply(.hostSwitched(from: "a:5432", to: "b:5432"), wallClock: Self.now)
        #expect(single.showsSwitches, "a name with several addresses switched")
    }

    @Test func startsAtZero() {
        let fields = Fields(TargetSeries(config: Self.config))
        #expect(!fields.probeHealthy && !fields.loginUp && fields.state == nil)
        #expect(fields.probes == 0 && fields.connectionAttempts == 0 && fields.loginChecks == 0 && fields.resets == 0)
        #expect(fields.lastSuccess == 0 && fields.sessionStart == 0 && fields.downtime == 0 && fields.backoff == 0)
        #expect(fields.serverVersion == nil && fields.inRecovery == nil && fields.serverStartTime == nil)
        #expect(fields.probeDuration.count == 0 && fields.connectDuration.count == 0)
        #expect(fields.outageDuration.count == 0 && fields.outages == 0)
    }

    // MARK: - Reason counters

    @Test func reasonCountersArePreCreatedAtZero() {
        let series = TargetSeries(config: Self.config)
        let probe: Set<FailureReason> = [
            .timeout, .network, .tls, .auth, .adminShutdown, .crashShutdown, .idleTimeout, .connectionLost,
            .queryError, .readOnly, .replicationLag, .other,
        ]
        let connect = Set(FailureReason.allCases).subtracting([.queryError, .readOnly, .replicationLag, .idleTimeout])
        let disconnect: Set<FailureReason> = [
            .timeout, .network, .tls, .adminShutdown, .crashShutdown, .idleTimeout, .connectionLost, .other,
        ]
        #expect(Set(series.probeFailures.keys) == probe)
        #expect(Set(series.connectionFailures.keys) == connect)
        #expect(Set(series.loginFailures.keys) == connect)
        #expect(Set(series.disconnects.keys) == disconnect)
        #expect(connect.count == 14)
        #expect(connect.contains(.passwordUnavailable), "a session connect and a login check read the password")
        for counts in [series.probeFailures, series.connectionFailures, series.loginFailures, series.disconnects] {
            #expect(counts.values.allSatisfy { $0 == 0 })
        }
    }

    @Test func anUnexpectedReasonIsStillCounted() {
        var series = TargetSeries(config: Self.config)
        #expect(series.probeFailures[.refused] == nil)
        series.apply(.probeFailed(Self.refused), wallClock: Self.now)
        series.apply(.connectionFailed(Failure(reason: .readOnly, message: "x"), duration: .zero), wallClock: Self.now)
        series.apply(.disconnected(Self.badPassword), wallClock: Self.now)
        series.apply(.failed(Failure(reason: .queryError, message: "x"), duration: .zero))
        #expect(series.probeFailures[.refused] == 1)
        #expect(series.connectionFailures[.readOnly] == 1)
        #expect(series.disconnects[.auth] == 1)
        #expect(series.loginFailures[.queryError] == 1)
        #expect(series.probeFailures.count == 13, "the pre-created twelve plus the new one")
    }

    // MARK: - Session observations

    @Test("each session observation changes exactly its fields", arguments: SessionCase.all)
    func sessionObservation(_ testCase: SessionCase) {
        var series = Self.baseSeries()
        let before = Fields(series)
        var expected = before
        testCase.change(&expected)
        #expect(testCase.isNoOp == (expected == before), "the case's expectation must really change something")
        series.apply(testCase.observation, wallClock: Self.now)
        let after = Fields(series)
        #expect(after == expected, "\(after.differences(from: expected))")
    }

    @Test func everySessionObservationKindHasACase() {
        #expect(Set(SessionCase.all.map { SessionCase.kind($0.observation) }) == Set(SessionCase.allKinds))
    }

    @Test func downtimeAccumulates() {
        var series = Self.baseSeries()
        series.apply(.downtime(.milliseconds(1500)), wallClock: Self.now)
        series.apply(.downtime(.seconds(2)), wallClock: Self.now)
        #expect(series.downtime == 3.5)
    }

    // MARK: - Login observations

    @Test("each login observation changes exactly its fields", arguments: LoginCase.all)
    func loginObservation(_ testCase: LoginCase) {
        var series = Self.baseSeries()
        series.apply(.healthChanged(up: testCase.startUp, failure: nil))
        let before = Fields(series)
        var expected = before
        testCase.change(&expected)
        #expect(expected != before, "the case's expectation must really change something")
        series.apply(testCase.observation)
        let after = Fields(series)
        #expect(after == expected, "\(after.differences(from: expected))")
    }

    // MARK: - State the machine holds

    @Test func syncCopiesStateBackoffAndFailuresFromTheMachine() {
        var machine = SessionStateMachine(config: Self.config, seed: 7)
        var series = TargetSeries(config: Self.config)
        _ = machine.start(now: .zero)
        _ = machine.connectFailed(Self.refused, now: MonotonicInstant(nanoseconds: 1_000_000))
        series.sync(with: machine)
        #expect(series.state == .backoff)
        #expect(series.consecutiveFailures == 1)
        #expect(series.backoff == 1, "initial backoff, no jitter")
        #expect(!series.probeHealthy)

        _ = machine.timerFired(now: MonotonicInstant(nanoseconds: 1_001_000_000))
        series.sync(with: machine)
        #expect(series.state == .connecting)
        #expect(series.backoff == 0, "0 when not backing off")
        _ = machine.connected(now: MonotonicInstant(nanoseconds: 1_002_000_000))
        _ = machine.factsRead(nil, now: MonotonicInstant(nanoseconds: 1_003_000_000))
        _ = machine.probeSucceeded(inRecovery: nil, now: MonotonicInstant(nanoseconds: 1_004_000_000))
        series.sync(with: machine)
        #expect(series.state == .up)
        #expect(series.consecutiveFailures == 0)
        #expect(series.probeHealthy)
    }

    /// A failover seen by a probe (`expect: primary`, the server is now in recovery) must show in
    /// `pgconn_server_in_recovery`: the session is kept, so no reconnect re-reads the facts.
    @Test func aProbeThatFindsTheWrongRoleUpdatesInRecovery() {
        var config = Self.config
        config.expect = .primary
        var machine = SessionStateMachine(config: config, seed: 1)
        var series = TargetSeries(config: config)
        func ms(_ value: Int64) -> MonotonicInstant { MonotonicInstant(nanoseconds: value * 1_000_000) }
        var outputs = [machine.start(now: ms(0))]
        outputs.append(machine.connected(now: ms(10)))
        outputs.append(machine.factsRead(ServerFacts(inRecovery: false), now: ms(11)))
        outputs.append(machine.probeSucceeded(inRecovery: false, now: ms(12)))
        outputs.append(machine.timerFired(now: ms(5_012)))
        outputs.append(machine.probeSucceeded(inRecovery: true, now: ms(5_013)))
        for observation in outputs.flatMap(\.observations) { series.apply(observation, wallClock: Self.now) }
        series.sync(with: machine)
        #expect(series.probeFailures[.readOnly] == 1)
        #expect(series.state == .up, "the session is kept")
        #expect(series.inRecovery == true)
    }

    // MARK: - Staleness

    @Test(
        "pgconn_up needs health and a success no older than staleAfter (12 s here)",
        arguments: [
            (true, 1_000.0, 1_000.0, true), (true, 1_000, 1_012, true), (true, 1_000, 1_012.001, false),
            (true, 1_000, 5_000, false), (false, 1_000, 1_001, false), (false, 1_000, 1_000, false),
        ] as [(Bool, Double, Double, Bool)])
    func isUp(healthy: Bool, lastSuccess: Double, now: Double, expected: Bool) {
        var series = TargetSeries(config: Self.config)
        series.probeHealthy = healthy
        series.lastSuccessAt = MonotonicInstant(wallClock: lastSuccess)
        #expect(series.isUp(now: MonotonicInstant(wallClock: now)) == expected)
    }

    /// Staleness used to compare wall-clock values from two threads, so a clock step read every target 0.
    @Test func aWallClockStepDoesNotMakeATargetStale() {
        var series = TargetSeries(config: Self.config)
        series.apply(.healthChanged(up: true, failure: nil), wallClock: 1_000)
        series.probeHealthy = true
        series.apply(
            .probeSucceeded(duration: .milliseconds(1), inRecovery: nil), wallClock: 1_000,
            now: MonotonicInstant(nanoseconds: 5_000_000_000))
        // The wall clock jumps an hour ahead; the monotonic clock has moved one second.
        #expect(series.isUp(now: MonotonicInstant(nanoseconds: 6_000_000_000)))
        #expect(series.lastSuccess == 1_000, "the timestamp metric stays wall-clock")
        #expect(!series.isUp(now: MonotonicInstant(nanoseconds: 18_000_000_001)), "stale after 12 s of monotonic time")
    }

    @Test func aHealthySeriesGoesStaleWithoutNewSuccesses() {
        var series = Self.baseSeries()
        #expect(series.probeHealthy, "no failure was ever observed")
        #expect(series.isUp(now: MonotonicInstant(wallClock: Self.before + 11)))
        #expect(!series.isUp(now: MonotonicInstant(wallClock: Self.before + 13)), "the loop stalled: healthy but stale")
        series.apply(.probeSucceeded(duration: .milliseconds(1), inRecovery: nil), wallClock: Self.before + 13)
        #expect(series.isUp(now: MonotonicInstant(wallClock: Self.before + 13)))
    }
}

// MARK: - Fixtures

extension TargetSeriesTests {
    /// Every mutable field of a ``TargetSeries``, comparable as a whole so a test sees unexpected changes too.
    struct Fields: Equatable {
        var probeHealthy: Bool
        var loginUp: Bool
        var state: SessionStateMachine.StateName?
        var probes: UInt64
        var probeFailures: [FailureReason: UInt64]
        var probeDuration: Histogram
        var connectDuration: Histogram
        var connectionAttempts: UInt64
        var connectionFailures: [FailureReason: UInt64]
        var loginChecks: UInt64
        var loginFailures: [FailureReason: UInt64]
        var disconnects: [FailureReason: UInt64]
        var resets: UInt64
        var consecutiveFailures: Int
        var lastSuccess: Double
        var sessionStart: Double
        var outages: UInt64
        var outageDuration: Histogram
        var downtime: Double
        var backoff: Double
        var serverVersion: String?
        var inRecovery: Bool?
        var serverStartTime: Double?
        var server: ConnectionDetails?
        var hostSwitches: UInt64
        var roleChanges: UInt64
        var failovers: UInt64
        var failoverDuration: Histogram
        var replayLag: Double?

        init(_ series: TargetSeries) {
            probeHealthy = series.probeHealthy
            loginUp = series.loginUp
            state = series.state
            probes = series.probes
            probeFailures = series.probeFailures
            probeDuration = series.probeDuration
            connectDuration = series.connectDuration
            connectionAttempts = series.connectionAttempts
            connectionFailures = series.connectionFailures
            loginChecks = series.loginChecks
            loginFailures = series.loginFailures
            disconnects = series.disconnects
            resets = series.resets
            consecutiveFailures = series.consecutiveFailures
            lastSuccess = series.lastSuccess
            sessionStart = series.sessionStart
            outages = series.outages
            outageDuration = series.outageDuration
            downtime = series.downtime
            backoff = series.backoff
            serverVersion = series.serverVersion
            inRecovery = series.inRecovery
            serverStartTime = series.serverStartTime
            server = series.server
            hostSwitches = series.hostSwitches
            roleChanges = series.roleChanges
            failovers = series.failovers
            failoverDuration = series.failoverDuration
            replayLag = series.replayLag
        }

        /// The names of the fields that differ, for a readable failure.
        func differences(from other: Fields) -> [String] {
            let mine = Mirror(reflecting: self).children
            let theirs = Mirror(reflecting: other).children
            return zip(mine, theirs).compactMap { pair in
                let (a, b) = pair
                let left = String(describing: a.value)
                let right = String(describing: b.value)
                return left == right ? nil : "\(a.label ?? "?"): \(left) != expected \(right)"
            }
        }
    }

    /// One session observation and the field changes it must cause, starting from ``TargetSeriesTests/baseSeries()``.
    struct SessionCase: Sendable, CustomTestStringConvertible {
        var name: String
        var observation: SessionStateMachine.Observation
        var isNoOp = false
        var change: @Sendable (inout Fields) -> Void

        var testDescription: String { name }

        static let all: [SessionCase] = [
            SessionCase(name: "connectionAttempt", observation: .connectionAttempt) { $0.connectionAttempts += 1 },
            SessionCase(name: "connected", observation: .connected(duration: .milliseconds(25))) {
                $0.connectDuration.observe(0.025)
                $0.sessionStart = now
            },
            SessionCase(
                name: "connectionFailed",
                observation: .connectionFailed(refused, duration: .seconds(5))
            ) { $0.connectionFailures[.refused, default: 0] += 1 },
            SessionCase(
                name: "facts, all three",
                observation: .facts(ServerFacts(version: "16.2", inRecovery: true, startTime: 1_699_000_000.25))
            ) {
                $0.serverVersion = "16.2"
                $0.inRecovery = true
                $0.roleChanges += 1  // the base series' server was a primary
                $0.serverStartTime = 1_699_000_000.25
            },
            SessionCase(name: "facts, none known", observation: .facts(ServerFacts()), isNoOp: true) { _ in },
            SessionCase(name: "serverRestarted", observation: .serverRestarted, isNoOp: true) { _ in },
            SessionCase(name: "facts, new start time", observation: .facts(ServerFacts(startTime: 1_699_900_000))) {
                $0.serverStartTime = 1_699_900_000
            },
            SessionCase(
                name: "probeSucceeded with role",
                observation: .probeSucceeded(duration: .milliseconds(3), inRecovery: true)
            ) {
                $0.probes += 1
                $0.probeDuration.observe(0.003)
                $0.lastSuccess = now
                $0.inRecovery = true
                $0.roleChanges += 1
            },
            SessionCase(
                name: "probeSucceeded without role",
                observation: .probeSucceeded(duration: .milliseconds(3), inRecovery: nil)
            ) {
                $0.probes += 1
                $0.probeDuration.observe(0.003)
                $0.lastSuccess = now
            },
            SessionCase(name: "probeFailed", observation: .probeFailed(syntax)) {
                $0.probes += 1
                $0.probeFailures[.queryError, default: 0] += 1
            },
            SessionCase(name: "disconnected", observation: .disconnected(terminated)) {
                $0.disconnects[.adminShutdown, default: 0] += 1
                $0.sessionStart = 0
            },
            SessionCase(name: "reset", observation: .reset) {
                $0.resets += 1
                $0.sessionStart = 0
            },
            SessionCase(
                name: "stateChanged (a gauge set by sync alone)",
                observation: .stateChanged(from: .up, to: .backoff, failure: terminated), isNoOp: true
            ) { _ in },
            SessionCase(
                name: "healthChanged (a gauge set by sync alone)",
                observation: .healthChanged(up: false, failure: terminated), isNoOp: true
            ) { _ in },
            SessionCase(name: "outageStarted", observation: .outageStarted) { $0.outages += 1 },
            SessionCase(name: "outageEnded", observation: .outageEnded(duration: .seconds(90))) {
                $0.outageDuration.observe(90)
            },
            SessionCase(name: "downtime", observation: .downtime(.milliseconds(1500))) { $0.downtime += 1.5 },
            SessionCase(
                name: "endpoint",
                observation: .endpoint(
                    ConnectionDetails(host: "db2", port: "5432", tls: TLSDetails(version: "TLSv1.3", cipher: "X")))
            ) {
                $0.server = ConnectionDetails(
                    host: "db2", port: "5432", tls: TLSDetails(version: "TLSv1.3", cipher: "X"))
            },
            SessionCase(name: "replayLag", observation: .replayLag(seconds: 2.5)) { $0.replayLag = 2.5 },
            SessionCase(name: "hostSwitched", observation: .hostSwitched(from: "db1:5432", to: "db2:5432")) {
                $0.hostSwitches += 1
            },
            SessionCase(
                name: "failover", observation: .failover(from: "db1:5432", to: "db2:5432", duration: .seconds(7))
            ) {
                $0.failovers += 1
                $0.failoverDuration.observe(7)
            },
        ]

        /// An exhaustive switch: a new observation kind does not compile here until it is named (and given a case).
        static func kind(_ observation: SessionStateMachine.Observation) -> String {
            switch observation {
            case .connectionAttempt: "connectionAttempt"
            case .connected: "connected"
            case .connectionFailed: "connectionFailed"
            case .facts: "facts"
            case .probeSucceeded: "probeSucceeded"
            case .probeFailed: "probeFailed"
            case .disconnected: "disconnected"
            case .reset: "reset"
            case .stateChanged: "stateChanged"
            case .healthChanged: "healthChanged"
            case .serverRestarted: "serverRestarted"
            case .outageStarted: "outageStarted"
            case .outageEnded: "outageEnded"
            case .downtime: "downtime"
            case .endpoint: "endpoint"
            case .hostSwitched: "hostSwitched"
            case .failover: "failover"
            case .replayLag: "replayLag"
            }
        }

        static let allKinds = [
            "connectionAttempt", "connected", "connectionFailed", "facts", "probeSucceeded", "probeFailed",
            "disconnected", "reset", "stateChanged", "healthChanged", "outageStarted", "outageEnded", "downtime",
            "serverRestarted", "endpoint", "hostSwitched", "failover", "replayLag",
        ]
    }

    /// One login-check observation and the field changes it must cause.
    struct LoginCase: Sendable, CustomTestStringConvertible {
        var name: String
        var observation: LoginCheckStateMachine.Observation
        /// `loginUp` before the observation.
        var startUp = false
        var change: @Sendable (inout Fields) -> Void

        var testDescription: String { name }

        static let all: [LoginCase] = [
            LoginCase(name: "succeeded", observation: .succeeded(duration: .milliseconds(8))) {
                $0.loginChecks += 1
                $0.connectDuration.observe(0.008)
            },
            LoginCase(name: "failed", observation: .failed(badPassword, duration: .milliseconds(40))) {
                $0.loginChecks += 1
                $0.loginFailures[.auth, default: 0] += 1
            },
            LoginCase(name: "healthChanged up", observation: .healthChanged(up: true, failure: nil)) {
                $0.loginUp = true
            },
            LoginCase(
                name: "healthChanged down", observation: .healthChanged(up: false, failure: badPassword),
                startUp: true
            ) { $0.loginUp = false },
        ]
    }
}
