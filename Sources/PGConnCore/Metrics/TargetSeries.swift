/// Every exported value of one target, fed by the state machines' observations.
///
/// A plain value: the monitor applies observations under the store's lock, a scrape copies the values out
/// and renders them without it. Reason counters start at 0 for the reasons their family can produce
/// (so `increase()` sees the first failure); an unexpected reason gets its series when it first happens.
public struct TargetSeries: Sendable {
    public let name: String
    /// `pgconn_target_info` labels after `target`: host, port, database, user, sslmode, then the config's labels.
    public private(set) var infoLabels: [(key: String, value: String)] = []
    /// How old the last success may be before `pgconn_up` reads 0 even if no failure was seen (a stalled loop).
    public private(set) var staleAfter: Duration = .zero
    public private(set) var loginEnabled = false

    public internal(set) var probeHealthy = false
    public internal(set) var loginUp = false
    /// Whether a login check has finished; `pgconn_login_up` is absent until then rather than a false 0.
    public internal(set) var loginChecked = false
    public internal(set) var state: SessionStateMachine.StateName?
    public internal(set) var probes: UInt64 = 0
    public internal(set) var probeFailures: [FailureReason: UInt64]
    public internal(set) var probeDuration = Histogram(bounds: Histogram.probeBounds)
    public internal(set) var connectDuration = Histogram(bounds: Histogram.connectBounds)
    public internal(set) var connectionAttempts: UInt64 = 0
    public internal(set) var connectionFailures: [FailureReason: UInt64]
    public internal(set) var loginChecks: UInt64 = 0
    public internal(set) var loginFailures: [FailureReason: UInt64]
    public internal(set) var disconnects: [FailureReason: UInt64]
    public internal(set) var resets: UInt64 = 0
    public internal(set) var consecutiveFailures = 0
    /// Unix seconds of the last successful probe, 0 before the first.
    public internal(set) var lastSuccess: Double = 0
    /// The same on the monotonic clock, for staleness: a step of the wall clock must not read every target 0.
    public internal(set) var lastSuccessAt: MonotonicInstant?
    /// Unix seconds when the current session was established, 0 without a session.
    public internal(set) var sessionStart: Double = 0
    public internal(set) var outages: UInt64 = 0
    public internal(set) var outageDuration = Histogram(bounds: Histogram.outageBounds)
    public internal(set) var downtime: Double = 0
    public internal(set) var backoff: Double = 0
    public internal(set) var serverVersion: String?
    public internal(set) var inRecovery: Bool?
    public internal(set) var serverStartTime: Double?
    /// How far behind the standby replays (`expect: standby` targets), seconds; `nil` until read.
    public internal(set) var replayLag: Double?
    /// The server of the latest session (kept after it is lost, until the next connects).
    public internal(set) var server: ConnectionDetails?
    /// Whether the DSN lists several hosts: the switch and failover families are shown for such targets (and
    /// for any that switched anyway, e.g. a name with several addresses).
    public private(set) var multiHost = false
    public internal(set) var hostSwitches: UInt64 = 0
    /// Changes of `pg_is_in_recovery()` seen on the target (a promotion under a live session, a switch to a
    /// server in the other role).
    public internal(set) var roleChanges: UInt64 = 0
    public internal(set) var failovers: UInt64 = 0
    public internal(set) var failoverDuration = Histogram(bounds: Histogram.failoverBounds)
    /// For `/health`: the last failure of a probe, connect or session (its message never holds a password),
    /// since when the probe has been succeeding or failing (Unix seconds; retries within an outage do not move
    /// it), and the last successful probe's round trip.
    public internal(set) var lastFailure: Failure?
    public internal(set) var healthSince: Double = 0
    public internal(set) var lastProbeDuration: Duration?
    /// The last login check's failure, `nil` after a success.
    public internal(set) var loginFailure: Failure?

    /// Reasons a failed connect can have (session connects and login checks).
    static let connectReasons: [FailureReason] = FailureReason.allCases.filter {
        ![.queryError, .readOnly, .replicationLag, .idleTimeout].contains($0)
    }
    /// Reasons a probe on an established session can fail with.
    /// `auth` is here because a probe refused for privileges (42501) is classified so.
    static let probeReasons: [FailureReason] = [
        .timeout, .network, .tls, .auth, .adminShutdown, .crashShutdown, .idleTimeout, .connectionLost,
        .queryError, .readOnly, .replicationLag, .other,
    ]
    /// Reasons an established session can be lost for.
    static let disconnectReasons: [FailureReason] = [
        .timeout, .network, .tls, .adminShutdown, .crashShutdown, .idleTimeout, .connectionLost, .other,
    ]

    public init(config: TargetConfig) {
        name = config.name
        probeFailures = Self.zeroes(Self.probeReasons)
        connectionFailures = Self.zeroes(Self.connectReasons)
        loginFailures = Self.zeroes(Self.connectReasons)
        disconnects = Self.zeroes(Self.disconnectReasons)
        reconfigure(config)
    }

    /// Takes the settings of a changed config for the same target name; counters and histograms are kept.
    public mutating func reconfigure(_ config: TargetConfig) {
        infoLabels =
            [
                ("host", config.summary.host), ("port", config.summary.port), ("database", config.summary.database),
                ("user", config.summary.user), ("sslmode", config.summary.sslmode),
            ] + config.labels
        staleAfter = config.probeInterval * 2 + config.probeTimeout
        multiHost = config.summary.host.contains(",")
        loginEnabled = config.loginInterval > .zero
    }

    private static func zeroes(_ reasons: [FailureReason]) -> [FailureReason: UInt64] {
        Dictionary(uniqueKeysWithValues: reasons.map { ($0, 0) })
    }

    /// Applies what the session's state machine observed. `wallClock` is Unix seconds, for timestamps; `now`
    /// is the monotonic instant of the observation (tests that keep one clock may leave it to be derived).
    public mutating func apply(
        _ observation: SessionStateMachine.Observation, wallClock: Double, now: MonotonicInstant? = nil
    ) {
        switch observation {
        case .connectionAttempt:
            connectionAttempts += 1
        case .connected(let duration):
            connectDuration.observe(duration.seconds)
            sessionStart = wallClock
        case .connectionFailed(let failure, _):
            connectionFailures[failure.reason, default: 0] += 1
            lastFailure = failure
            if healthSince == 0 { healthSince = wallClock }  // failing since the start
        case .facts(let facts):
            if let version = facts.version { serverVersion = version }
            if let recovery = facts.inRecovery { noteRole(recovery) }
            if let start = facts.startTime { serverStartTime = start }
        case .probeSucceeded(let duration, let recovery):
            probes += 1
            probeDuration.observe(duration.seconds)
            lastSuccess = wallClock
            lastSuccessAt = now ?? MonotonicInstant(wallClock: wallClock)
            lastProbeDuration = duration
            if let recovery { noteRole(recovery) }
        case .probeFailed(let failure):
            probes += 1
            probeFailures[failure.reason, default: 0] += 1
            lastFailure = failure
            if healthSince == 0 { healthSince = wallClock }
        case .disconnected(let failure):
            disconnects[failure.reason, default: 0] += 1
            lastFailure = failure
            sessionStart = 0
        case .reset:
            resets += 1
            sessionStart = 0
        case .stateChanged:
            break  // a gauge of the machine's state: set by ``sync(with:)`` alone
        case .healthChanged:
            healthSince = wallClock  // the health itself, a gauge, is set by ``sync(with:)`` alone
        case .outageStarted:
            outages += 1
        case .outageEnded(let duration):
            outageDuration.observe(duration.seconds)
        case .downtime(let duration):
            downtime += duration.seconds
        case .serverRestarted:
            break  // logged by the monitor; the new start time itself came with `.facts`
        case .endpoint(let details):
            server = details
        case .replayLag(let seconds):
            replayLag = seconds
        case .hostSwitched:
            hostSwitches += 1
        case .failover(_, _, let duration):
            failovers += 1
            failoverDuration.observe(duration.seconds)
        }
    }

    /// Records the role read from the server; a change from a known role counts.
    private mutating func noteRole(_ recovery: Bool) {
        if let known = inRecovery, known != recovery { roleChanges += 1 }
        inRecovery = recovery
    }

    /// Whether the switch and failover families are shown for this target.
    public var showsSwitches: Bool { multiHost || hostSwitches > 0 }

    /// Applies what the login check observed.
    public mutating func apply(_ observation: LoginCheckStateMachine.Observation) {
        switch observation {
        case .succeeded(let duration):
            loginChecks += 1
            loginChecked = true
            loginFailure = nil
            connectDuration.observe(duration.seconds)
        case .failed(let failure, _):
            loginChecks += 1
            loginChecked = true
            loginFailures[failure.reason, default: 0] += 1
            loginFailure = failure
        case .healthChanged(let up, _):
            loginUp = up
        }
    }

    /// Copies the gauges that the state machine holds as state rather than as observations: `pgconn_state`,
    /// `pgconn_up`'s health, `pgconn_consecutive_failures`, `pgconn_backoff_seconds`. They are set here and
    /// nowhere else; counters and histograms come from observations (``apply(_:wallClock:)``).
    public mutating func sync(with session: SessionStateMachine) {
        state = session.stateName
        consecutiveFailures = session.consecutiveFailures
        backoff = session.backoffDelay.seconds
        probeHealthy = session.isHealthy
    }

    /// `pgconn_up` at scrape time: healthy, and the last success is recent enough to trust (on the monotonic
    /// clock of the process, so a wall-clock step changes nothing).
    public func isUp(now: MonotonicInstant) -> Bool {
        guard probeHealthy, let lastSuccessAt else { return false }
        return now - lastSuccessAt <= staleAfter
    }
}

extension MonotonicInstant {
    /// An instant at `wallClock` seconds: for tests and callers that drive everything from one clock.
    public init(wallClock: Double) { self.init(nanoseconds: Int64(wallClock * 1e9)) }
}
