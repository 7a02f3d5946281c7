/// The schedule of one target's login checks: every `login_interval` a fresh connection is opened,
/// authenticated and closed, independent of the session.
///
/// A live session cannot prove that new clients get in: a revoked password, a full `max_connections` or
/// a broken `pg_hba.conf` only show on a new login. States:
///
///     disabled (login_interval 0)
///     waiting(next) ──timer──► running(started) ──succeeded / failed / timeout──► waiting(started + interval)
///
/// The first check runs at start. Like ``SessionStateMachine``, it does no I/O: the monitor opens and closes
/// the connection when the returned actions say so.
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

    public struct Output: Equatable, Sendable {
        public var actions: [Action] = []
        public var observations: [Observation] = []

        public init(actions: [Action] = [], observations: [Observation] = []) {
            self.actions = actions
            self.observations = observations
        }
    }

    enum State: Equatable, Sendable {
        case disabled
        case idle
        case waiting(next: MonotonicInstant)
        case running(started: MonotonicInstant)
    }

    public let interval: Duration
    public let timeout: Duration
    private(set) var state: State
    /// Whether the last check succeeded; `nil` before the first one finished.
    public private(set) var lastSucceeded: Bool?

    public init(interval: Duration, timeout: Duration) {
        self.interval = interval
        self.timeout = timeout
        self.state = interval > .zero ? .idle : .disabled
    }

    public var isEnabled: Bool { state != .disabled }

    /// When `timerFired` must be called next.
    public var deadline: MonotonicInstant? {
        switch state {
        case .disabled, .idle: nil
        case .waiting(let next): next
        case .running(let started): started + timeout
        }
    }

    /// Starts the schedule; the first check begins now.
    public mutating func start(now: MonotonicInstant) -> Output {
        guard state == .idle else { return Output() }
        state = .running(started: now)
        return Output(actions: [.openConnection])
    }

    public mutating func succeeded(now: MonotonicInstant) -> Output {
        guard case .running(let started) = state else { return Output() }
        return finish(started: started, now: now, failure: nil)
    }

    public mutating func failed(_ failure: Failure, now: MonotonicInstant) -> Output {
        guard case .running(let started) = state else { return Output() }
        return finish(started: started, now: now, failure: failure)
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
            return finish(started: started, now: now, failure: failure)
        }
    }

    /// Stops the schedule, closing a check in progress.
    public mutating func stop() -> Output {
        let running = if case .running = state { true } else { false }
        state = .disabled
        return Output(actions: running ? [.closeConnection] : [])
    }

    private mutating func finish(started: MonotonicInstant, now: MonotonicInstant, failure: Failure?) -> Output {
        state = .waiting(next: started + interval)
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
