/// The configuration after validation: every value present, in range and typed.
///
/// Only ``ConfigLoader`` builds one (from YAML): the initializer and the setters are internal, so outside
/// PGConnCore every value has been through validation (tests use `@testable import`). Everything downstream
/// reads this and never the raw YAML, so no check is repeated and none is forgotten.
public struct ValidatedConfig: Sendable, Equatable {
    public internal(set) var health: HealthPolicy
    public internal(set) var targets: [TargetConfig]
    /// The `modules:` entries for `/probe?target=host[:port]&module=<name>`, in config order.
    public internal(set) var modules: [ProbeModule]
    /// How much detail `/metrics` shows per target (`metrics:`).
    public internal(set) var metrics: MetricsDetail

    init(
        health: HealthPolicy = HealthPolicy(), targets: [TargetConfig], modules: [ProbeModule] = [],
        metrics: MetricsDetail = MetricsDetail()
    ) {
        self.health = health
        self.targets = targets
        self.modules = modules
        self.metrics = metrics
    }

    /// The module called `name`, or `nil`. Module names are unique (the loader rejects a repeated key).
    public func module(named name: String) -> ProbeModule? {
        modules.first { $0.name == name }
    }
}

/// `metrics: {histograms: full | coarse | off, reasons: all | seen}`: fewer series per target for large fleets.
///
/// Only the page changes: the store keeps recording everything, so a reload that asks for more detail shows
/// the full histograms and every counter at once, with the history they gathered meanwhile.
public struct MetricsDetail: Sendable, Equatable {
    /// The per-target histograms (probe, connect and outage durations).
    public enum Histograms: String, Sendable, Equatable, CaseIterable {
        /// Every bucket (``Histogram/probeBounds`` and the others).
        case full
        /// 4 buckets each, a subset of the full bounds (``Histogram/probeCoarseBounds`` and the others).
        case coarse
        /// No per-target histogram families at all.
        case off
    }

    /// The per-target reason counters (`pgconn_*_failures_total`, `pgconn_disconnects_total`).
    public enum Reasons: String, Sendable, Equatable, CaseIterable {
        /// Every reason a family can produce, from 0, so `increase()` sees a reason's first failure.
        case all
        /// Only reasons that have happened to the target: a first failure appears as a new series at 1.
        case seen
    }

    public internal(set) var histograms: Histograms
    public internal(set) var reasons: Reasons

    public init(histograms: Histograms = .full, reasons: Reasons = .all) {
        self.histograms = histograms
        self.reasons = reasons
    }
}

/// When `/health` answers 200: how many of which targets must be healthy, and what healthy means.
public struct HealthPolicy: Sendable, Equatable {
    public internal(set) var require: HealthRequirement
    /// The targets that count, by name, in config order; `nil`: all of them.
    public internal(set) var targets: [String]?
    /// A target is healthy only if its last login check passed too (when it has login checks).
    public internal(set) var login: Bool

    init(require: HealthRequirement = .all, targets: [String]? = nil, login: Bool = false) {
        self.require = require
        self.targets = targets
        self.login = login
    }
}

/// How many targets must be healthy for `/health` to answer 200.
public enum HealthRequirement: Sendable, Equatable {
    case all
    case any
    case atLeast(Int)
}

/// What role a target's server must have.
public enum ExpectedRole: String, Sendable, Equatable, CaseIterable {
    case primary
    case standby
    case any
}

/// Where the password comes from; read again on every (re)connect so a rotated secret is picked up.
public enum PasswordSource: Sendable, Equatable {
    case none
    case file(String)
    case environment(String)
}

/// Exponential backoff settings for reconnecting a broken session.
public struct BackoffConfig: Sendable, Equatable {
    public var initial: Duration
    public var max: Duration
    public var multiplier: Double
    /// Fraction in [0, 1]: each delay is spread uniformly over ±jitter of its nominal value.
    public var jitter: Double

    public init(initial: Duration, max: Duration, multiplier: Double, jitter: Double) {
        self.initial = initial
        self.max = max
        self.multiplier = multiplier
        self.jitter = jitter
    }

    public static let `default` = BackoffConfig(
        initial: .milliseconds(250), max: .seconds(5), multiplier: 2, jitter: 0.2)

    /// The schedule after a failure that the same credentials will meet again (`auth`, `database_missing`):
    /// at least 60 s before the first retry, doubling, and up to 15 min between retries (or the configured
    /// values, if longer). A wrong password then makes about 4 attempts in the first 15 minutes and one every
    /// 15 minutes after that, under common lockout thresholds (5 failures in 15 minutes). A changed password
    /// file is noticed without waiting (``SessionStateMachine/credentialsChanged(now:)``).
    public static func credentialFailures(after config: BackoffConfig) -> BackoffConfig {
        BackoffConfig(
            initial: Swift.max(config.initial, .seconds(60)), max: Swift.max(config.max, .seconds(900)),
            multiplier: Swift.max(config.multiplier, 2), jitter: config.jitter)
    }
}

/// TCP keepalive settings passed to libpq, so half-open connections are found without a probe.
public struct KeepaliveConfig: Sendable, Equatable {
    public var idle: Duration
    public var interval: Duration
    public var count: Int
    /// `tcp_user_timeout`: how long sent data may stay unacknowledged before the kernel drops the connection.
    public var userTimeout: Duration

    public init(idle: Duration, interval: Duration, count: Int, userTimeout: Duration) {
        self.idle = idle
        self.interval = interval
        self.count = count
        self.userTimeout = userTimeout
    }

    public static let `default` = KeepaliveConfig(
        idle: .seconds(10), interval: .seconds(5), count: 3, userTimeout: .seconds(15))
}

/// The parts of a DSN worth showing (in `pgconn_target_info`, logs, the landing page). Never the password.
public struct DSNSummary: Sendable, Equatable {
    public var host: String
    public var port: String
    public var database: String
    public var user: String
    public var sslmode: String

    public init(host: String, port: String, database: String, user: String, sslmode: String) {
        self.host = host
        self.port = port
        self.database = database
        self.user = user
        self.sslmode = sslmode
    }
}

/// One monitored database endpoint with every setting resolved (target values over `defaults`).
///
/// Built only by ``ConfigLoader``, like ``ValidatedConfig``: the initializer and the setters are internal.
extension TargetConfig {
    /// Whether a reload from `old` to this config can keep the established session: the same DSN, password
    /// source, keepalives and probe timeout (sent as `statement_timeout` at startup). Query, intervals,
    /// backoff, role and labels apply to the session as it is.
    public func keepsConnection(of old: TargetConfig) -> Bool {
        dsn == old.dsn && password == old.password && keepalives == old.keepalives && probeTimeout == old.probeTimeout
    }
}

public struct TargetConfig: Sendable, Equatable {
    public internal(set) var name: String
    /// The connection string as written (URI or key=value). May hold a password: never log or show it.
    public internal(set) var dsn: String
    public internal(set) var summary: DSNSummary
    public internal(set) var password: PasswordSource
    public internal(set) var query: String
    public internal(set) var probeInterval: Duration
    public internal(set) var probeTimeout: Duration
    public internal(set) var connectTimeout: Duration
    /// `.zero` turns login checks off.
    public internal(set) var loginInterval: Duration
    public internal(set) var backoff: BackoffConfig
    public internal(set) var keepalives: KeepaliveConfig
    public internal(set) var expect: ExpectedRole
    /// Extra labels for `pgconn_target_info`, sorted by key.
    public internal(set) var labels: [(key: String, value: String)]
    /// With `expect: standby`: a standby replaying further behind fails its probes with `replication_lag`.
    public internal(set) var maxReplayLag: Duration?

    init(
        name: String, dsn: String, summary: DSNSummary, password: PasswordSource = .none,
        query: String = "SELECT 1", probeInterval: Duration = .seconds(5), probeTimeout: Duration = .seconds(2),
        connectTimeout: Duration = .seconds(5), loginInterval: Duration = .seconds(60),
        backoff: BackoffConfig = .default, keepalives: KeepaliveConfig = .default,
        expect: ExpectedRole = .any, labels: [(key: String, value: String)] = [], maxReplayLag: Duration? = nil
    ) {
        self.maxReplayLag = maxReplayLag
        self.name = name
        self.dsn = dsn
        self.summary = summary
        self.password = password
        self.query = query
        self.probeInterval = probeInterval
        self.probeTimeout = probeTimeout
        self.connectTimeout = connectTimeout
        self.loginInterval = loginInterval
        self.backoff = backoff
        self.keepalives = keepalives
        self.expect = expect
        self.labels = labels
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.name == rhs.name && lhs.dsn == rhs.dsn && lhs.summary == rhs.summary && lhs.password == rhs.password
            && lhs.query == rhs.query && lhs.probeInterval == rhs.probeInterval
            && lhs.probeTimeout == rhs.probeTimeout && lhs.connectTimeout == rhs.connectTimeout
            && lhs.loginInterval == rhs.loginInterval && lhs.backoff == rhs.backoff
            && lhs.keepalives == rhs.keepalives && lhs.expect == rhs.expect && lhs.maxReplayLag == rhs.maxReplayLag
            && lhs.labels.elementsEqual(rhs.labels, by: { $0.key == $1.key && $0.value == $1.value })
    }
}
