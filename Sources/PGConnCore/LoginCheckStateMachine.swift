/// The schedule of one target's login checks: every `login_interval` a fresh connection is opened,
/// authenticated and closed, independent of the session.
///
/// A live session cannot prove that new clients get in: a revoked password, a full `max_connections` or
/// a broken `pg_hba.conf` only show on a new login. States:
///
///     disabled (login_interval 0)
///     idle ──start──► waiting(now + spread) ──timer──► running(started)
///     running ──succeeded / failed / timeout──► waiting(started + interval ± 10%)
///
/// Logins cost CPU on both ends (SCRAM hashes the password thousands of times), so checks of many targets
/// must not run in lockstep: the first one starts at a random point of the first ``startSpread`` (at most
/// 10 s, so a fresh exporter knows every login's state quickly), and each later one waits `login_interval`
/// ±10%, which keeps targets drifting apart. Like ``SessionStateMachine``, it does no I/O: the monitor opens
/// and closes the connection when the returned actions say so.
///
/// A check refused for its credentials (`auth`, `database_missing`) counts toward account lockouts like any
/// login: the next one waits at least the credential backoff (``BackoffConfig/credentialFailures(after:)``,
/// 60 s doubling to 15 min) unless ``credentialsChanged(now:)`` says the password source changed.
public struct LoginCheckStateMachine: Sendable {
    public enum Action: Equatable, Sendable {
        /// Start a fresh non-blocking connect; report `succeeded` or `failed`.
        case openConnection
        /// Close the login connection.
        case closeConnection
    }

    public enum Observation: Equatable, Sendable {
        case succeeded(duration: Duration)
        case failed(Failure, duration: Duration)
        /// `pgconn_login_up` flipped; logged once per flip.
        case healthChanged(up: Bool, failure: Failure?)
    }

    /// The result of one event.
    public typealias Output = MachineOutput<Action, Observation>

    enum State: Equatable, Sendable {
        case disabled
        /// Enabled, before start.
        case idle
        case waiting(next: MonotonicInstant)
        /// `started` is nil while the check waits for its turn to connect (see ``ConnectAdmission``).
        case running(started: MonotonicInstant?)
    }

    /// How far apart successive checks may drift from `interval`, as a fraction of it.
    public static let jitter = 0.1
    /// The longest wait before the first check.
    public static let maximumStartSpread: Duration = .seconds(10)

    public let interval: Duration
    public let timeout: Duration
    private(set) var state: State
    /// Whether the last check succeeded; `nil` before the first one finished.
    public private(set) var lastSucceeded: Bool?
    /// The next check waits on the credential backoff, after a credential failure.
    public private(set) var isWaitingOnCredentials = false
    private var random: SplitMix64
    private var credentialBackoff: Backoff

    public init(interval: Duration, timeout: Duration, seed: UInt64, backoff: BackoffConfig = .default) {
        self.interval = interval
        self.timeout = timeout
        self.state = interval > .zero ? .idle : .disabled
        self.random = SplitMix64(seed: seed)
        self.credentialBackoff = Backoff(config: .credentialFailures(after: backoff), seed: ~seed)
    }

    /// The window the first check starts in: `interval`, at most ``maximumStartSpread``.
    public var startSpread: Duration { min(interval, Self.maximumStartSpread) }

    public var isEnabled: Bool { state != .disabled }

    /// When `timerFired` must be called next.
    public var deadline: MonotonicInstant? {
        switch state {
        case .disabled, .idle: nil
        case .waiting(let next): next
        case .running(let started): started.map { $0 + timeout }
        }
    }

    /// Starts the schedule; the first check begins at a random point of ``startSpread``.
    public mutating func start(now: MonotonicInstant) -> Output {
        guard state == .idle else { return Output() }
        state = .waiting(next: now + startSpread * random.nextUnit())
        return Output()
    }

    public mutating func succeeded(now: MonotonicInstant) -> Output {
        guard case .running(let started?) = state else { return Output() }
        return finish(started: started, now: now, failure: nil)
    }

    public mutating func failed(_ failure: Failure, now: MonotonicInstant) -> Output {
        guard case .running(let started) = state else { return Output() }
        return finish(started: started ?? now, now: now, failure: failure)
    }

    public mutating func timerFired(now: MonotonicInstant) -> Output {
        guard let deadline, now >= deadline else { return Output() }
        switch state {
        case .disabled, .idle:
            return Output()
        case .waiting:
            state = .running(started: now)
            return Output(actions: [.openConnection])
        case .running(let started):
            let failure = Failure(reason: .timeout, message: "login timed out after \(timeout.prometheusString)")
            return finish(started: started ?? now, now: now, failure: failure)
        }
    }

    /// The check's connect must wait for its turn: no timeout runs meanwhile.
    public mutating func deferred() {
        if case .running = state { state = .running(started: nil) }
    }

    /// The deferred check connects now; its timeout and duration count from here.
    public mutating func admitted(now: MonotonicInstant) {
        if case .running(nil) = state { state = .running(started: now) }
    }

    /// The password source changed while the next check waits on the credential backoff: check now.
    public mutating func credentialsChanged(now: MonotonicInstant) -> Output {
        guard isWaitingOnCredentials, case .waiting = state else { return Output() }
        isWaitingOnCredentials = false
        state = .waiting(next: now)
        return Output()
    }

    /// Stops the schedule, closing a check in progress.
    public mutating func stop() -> Output {
        let running = if case .running = state { true } else { false }
        state = .disabled
        return Output(actions: running ? [.closeConnection] : [])
    }

    private mutating func finish(started: MonotonicInstant, now: MonotonicInstant, failure: Failure?) -> Output {
        var wait = interval * (1 + Self.jitter * (2 * random.nextUnit() - 1))
        if let failure, SessionStateMachine.isCredentialFailure(failure.reason) {
            wait = max(wait, credentialBackoff.next())
            isWaitingOnCredentials = true
        } else {
            if failure == nil { credentialBackoff.reset() }
            isWaitingOnCredentials = false
        }
        state = .waiting(next: started + wait)
        var output = Output(actions: [.closeConnection])
        if let failure {
            output.observations.append(.failed(failure, duration: now - started))
        } else {
            output.observations.append(.succeeded(duration: now - started))
        }
        let succeeded = failure == nil
        if lastSucceeded != succeeded {
            output.observations.append(.healthChanged(up: succeeded, failure: failure))
        }
        lastSucceeded = succeeded
        return output
    }
}
