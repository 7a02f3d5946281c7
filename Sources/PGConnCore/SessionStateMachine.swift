/// The lifecycle of one target's persistent session, as a value: events in, actions and observations out.
///
/// The I/O code (the monitor) owns the libpq connection and only does what the returned ``Action``s say;
/// everything that decides (timeouts, backoff, what a failure means, outages) lives here, with `now`
/// passed into every event so tests can run any scenario without a clock or a database.
///
/// States and their valid transitions:
///
///     idle ──start──► connecting ──connected──► up ──connectionLost / probe timeout──► backoff
///                       │                                                                 │
///                       └──connectFailed / connect timeout──► backoff ──timer──► connecting
///     backoff ──credentialsChanged──► connecting     any ──stop──► stopped
///
/// In `connecting`, a connect that must wait for its turn (``ConnectAdmission``, reported by
/// ``connectDeferred()``) has no deadline until ``connectAdmitted(now:)``.
/// While `up` the session cycles through reading server facts (once per connection), waiting, and probing.
/// A probe that fails on a working connection (a query error, the wrong role) keeps the session; one that
/// times out discards it, because a connection that stopped answering cannot be trusted again. A probe that
/// leaves a transaction open (`BEGIN; SELECT 1`, or a failed statement inside one) is followed by a `ROLLBACK`
/// on the same connection, so the session never idles in a transaction and nothing reconnects for it.
///
/// Probes keep their schedule across reconnects: after a reset the first probe of the new connection waits
/// until `probe_interval` after the last probe started, so a probe that breaks its own connection runs at most
/// once per interval, never in a reconnect loop.
///
/// After a `refused` connect the delay still grows, but while a wait of a second or more runs the monitor checks
/// the server's port; ``endpointReachable(now:)`` ends the wait as soon as it accepts, so a long outage ends
/// within a check interval of the server listening again, not up to `backoff.max` later.
///
/// Failures that retrying cannot fix and that can lock an account (`auth`, `database_missing`) back off on the
/// slower ``BackoffConfig/credentialFailures(after:)`` schedule; ``credentialsChanged(now:)`` cuts that wait short
/// when the password source changes.
public struct SessionStateMachine: Sendable {
    /// The states exported in `pgconn_state{state}`.
    public enum StateName: String, CaseIterable, Sendable {
        case connecting
        case up
        case backoff
    }

    /// What the I/O code must do next.
    public enum Action: Equatable, Sendable {
        /// Start a non-blocking connect; report `connected` or `connectFailed`.
        case openConnection
        /// Send the server-facts query on the session; report `factsRead`.
        case sendFactsQuery
        /// Send the probe query on the session; report `probeSucceeded` or `probeFailed`.
        case sendProbe
        /// Send `ROLLBACK` on the session; report `rolledBack`, or `connectionLost` if it fails.
        case sendRollback
        /// Close and forget the session's connection; no further events come from it.
        case closeConnection
    }

    /// What happened, for metrics and logs. Counters and histograms are fed from these.
    public enum Observation: Equatable, Sendable {
        case connectionAttempt
        case connected(duration: Duration)
        case connectionFailed(Failure, duration: Duration)
        case facts(ServerFacts)
        case probeSucceeded(duration: Duration, inRecovery: Bool?)
        case probeFailed(Failure)
        /// An established session was lost.
        case disconnected(Failure)
        /// A broken or dirty session was discarded and reconnection started.
        case reset
        case stateChanged(from: StateName?, to: StateName, failure: Failure?)
        /// `pgconn_up` flipped; logged once per flip, never per probe.
        case healthChanged(up: Bool, failure: Failure?)
        /// The postmaster start time changed between two connections: the server restarted.
        case serverRestarted
        case outageStarted
        case outageEnded(duration: Duration)
        /// How far a standby replays behind, read with the probe (`expect: standby`).
        case replayLag(seconds: Double)
        /// The session connected, to this server (libpq's host and port, TLS details).
        case endpoint(ConnectionDetails)
        /// The session connected to another host or port than the previous session (`host:port` each).
        case hostSwitched(from: String, to: String)
        /// An outage ended on another server than the one the session was on when it began: a failover, from
        /// the first failure to the first successful probe in the expected role.
        case failover(from: String, to: String, duration: Duration)
        /// Time spent in an outage since the last accounting, so downtime grows during an outage.
        case downtime(Duration)
    }

    /// The result of one event.
    public typealias Output = MachineOutput<Action, Observation>

    enum State: Equatable, Sendable {
        case idle
        /// `started` is nil while the connect waits for its turn (see ``ConnectAdmission``): no deadline then.
        case connecting(started: MonotonicInstant?)
        case up(since: MonotonicInstant, phase: UpPhase)
        case backoff(until: MonotonicInstant, delay: Duration)
        case stopped
    }

    enum UpPhase: Equatable, Sendable {
        case readingFacts(started: MonotonicInstant)
        case waiting(nextProbe: MonotonicInstant)
        case probing(started: MonotonicInstant)
        /// A `ROLLBACK` after a probe that left a transaction open; the probe schedule goes on afterwards.
        case rollingBack(started: MonotonicInstant, nextProbe: MonotonicInstant)
    }

    public private(set) var config: TargetConfig
    private(set) var state: State = .idle
    private var backoff: Backoff
    /// The slower schedule for failures that can lock an account (see ``isCredentialFailure(_:)``).
    private var credentialBackoff: Backoff
    /// The reason of the failure that started the current backoff.
    public private(set) var backoffReason: FailureReason?
    /// When the last probe started: the next one, even on a new connection, waits `probe_interval` after it.
    private var lastProbeStart: MonotonicInstant?
    /// The postmaster start time last read, to tell a restart from a reconnect.
    private var knownStartTime: Double?
    /// True while the last probe succeeded; drives `pgconn_up`.
    public private(set) var isHealthy = false
    /// Probe and connection failures since the last successful probe.
    public private(set) var consecutiveFailures = 0
    private var outageStart: MonotonicInstant?
    private var downtimeAccountedUntil: MonotonicInstant?
    /// The server of the latest session (kept after it is lost, until the next connects).
    public private(set) var endpoint: ConnectionDetails?
    /// The server the session was on when the current outage began; `nil` if it had none.
    private var outageEndpoint: ConnectionDetails?

    public init(config: TargetConfig, seed: UInt64) {
        self.config = config
        self.backoff = Backoff(config: config.backoff, seed: seed)
        self.credentialBackoff = Backoff(config: .credentialFailures(after: config.backoff), seed: ~seed)
    }

    /// Takes a reloaded config for the same connection (see ``TargetConfig/keepsConnection(of:)``): the state
    /// and its deadlines stay, later probes and retries use the new settings.
    public mutating func reconfigure(_ config: TargetConfig) {
        if config.backoff != self.config.backoff {
            backoff = Backoff(config: config.backoff, seed: UInt64(bitPattern: Int64(config.name.hashValue)))
            credentialBackoff = Backoff(
                config: .credentialFailures(after: config.backoff),
                seed: ~UInt64(bitPattern: Int64(config.name.hashValue)))
        }
        self.config = config
    }

    // MARK: - Reading the state

    /// The exported state, `nil` before start and after stop.
    public var stateName: StateName? {
        switch state {
        case .idle, .stopped: nil
        case .connecting: .connecting
        case .up: .up
        case .backoff: .backoff
        }
    }

    /// The current reconnect delay, zero unless in backoff.
    public var backoffDelay: Duration {
        if case .backoff(_, let delay) = state { return delay }
        return .zero
    }

    /// When `timerFired` must be called next, or `nil` when nothing is scheduled.
    public var deadline: MonotonicInstant? {
        switch state {
        case .idle, .stopped: nil
        case .connecting(let started): started.map { $0 + config.connectTimeout }
        case .backoff(let until, _): until
        case .up(_, .readingFacts(let started)), .up(_, .probing(let started)), .up(_, .rollingBack(let started, _)):
            started + config.probeTimeout
        case .up(_, .waiting(let next)): next
        }
    }

    /// Whether the session currently holds a connection (connecting or up).
    public var hasConnection: Bool {
        switch state {
        case .connecting, .up: true
        case .idle, .backoff, .stopped: false
        }
    }

    // MARK: - Events

    /// Begins monitoring: the first connection attempt starts at once.
    public mutating func start(now: MonotonicInstant) -> Output {
        guard case .idle = state else { return Output() }
        var output = Output()
        beginConnecting(now: now, from: nil, failure: nil, into: &output)
        return output
    }

    /// The non-blocking connect completed and the session is ready for queries.
    ///
    /// - Parameter details: which server it reached (`nil` when the connection cannot tell, as in tests).
    public mutating func connected(now: MonotonicInstant, details: ConnectionDetails? = nil) -> Output {
        guard case .connecting(let started?) = state else { return Output() }
        state = .up(since: now, phase: .readingFacts(started: now))
        var output = Output(
            actions: [.sendFactsQuery],
            observations: [
                .connected(duration: now - started),
                .stateChanged(from: .connecting, to: .up, failure: nil),
            ])
        if let details {
            output.observations.append(.endpoint(details))
            if let previous = endpoint, !previous.sameServer(as: details) {
                output.observations.append(.hostSwitched(from: previous.endpoint, to: details.endpoint))
            }
            endpoint = details
        }
        return output
    }

    /// The connect failed (refused, authentication, DNS, ...).
    public mutating func connectFailed(_ failure: Failure, now: MonotonicInstant) -> Output {
        guard case .connecting(let started) = state else { return Output() }
        var output = Output(actions: [.closeConnection])
        output.observations.append(.connectionFailed(failure, duration: now - (started ?? now)))
        recordFailure(failure, now: now, into: &output)
        beginBackoff(now: now, from: .connecting, failure: failure, into: &output)
        return output
    }

    /// The server-facts query finished; `nil` facts when the server could not answer it (a pooler, say).
    public mutating func factsRead(_ facts: ServerFacts?, now: MonotonicInstant) -> Output {
        guard case .up(let since, .readingFacts) = state else { return Output() }
        var output = Output()
        if let facts {
            output.observations.append(.facts(facts))
            if let start = facts.startTime {
                if let known = knownStartTime, abs(known - start) > 0.5 { output.observations.append(.serverRestarted) }
                knownStartTime = start
            }
        }
        if let last = lastProbeStart, last + config.probeInterval > now {
            state = .up(since: since, phase: .waiting(nextProbe: last + config.probeInterval))
        } else {
            state = .up(since: since, phase: .probing(started: now))
            lastProbeStart = now
            output.actions.append(.sendProbe)
        }
        return output
    }

    /// The probe query returned rows. `inRecovery` is reported when the probe also asked for the role.
    ///
    /// - Parameter leftTransactionOpen: the query left the session inside a transaction: a `ROLLBACK` follows.
    public mutating func probeSucceeded(
        inRecovery: Bool?, replayLag: Double? = nil, leftTransactionOpen: Bool = false, now: MonotonicInstant
    ) -> Output {
        guard case .up(let since, .probing(let started)) = state else { return Output() }
        var output = Output()
        finishProbe(since: since, started: started, rollback: leftTransactionOpen, now: now, into: &output)
        if let replayLag { output.observations.append(.replayLag(seconds: replayLag)) }
        if let replayLag, let limit = config.maxReplayLag, inRecovery != false, replayLag > limit.seconds {
            let failure = Failure(
                reason: .replicationLag,
                message:
                    "replay is \((replayLag * 10).rounded() / 10)s behind, over max_replay_lag \(limit.prometheusString)"
            )
            output.observations += [.probeFailed(failure), .facts(ServerFacts(inRecovery: inRecovery))]
            recordFailure(failure, now: now, into: &output)
            return output
        }
        if let inRecovery, let failure = roleMismatch(inRecovery: inRecovery) {
            // The session is kept, so no reconnect would re-read the role: report the new one here.
            output.observations += [.probeFailed(failure), .facts(ServerFacts(inRecovery: inRecovery))]
            recordFailure(failure, now: now, into: &output)
            return output
        }
        output.observations.append(.probeSucceeded(duration: now - started, inRecovery: inRecovery))
        backoff.reset()
        credentialBackoff.reset()
        consecutiveFailures = 0
        if let outageStart {
            accountDowntime(now: now, into: &output)
            output.observations.append(.outageEnded(duration: now - outageStart))
            if let lost = outageEndpoint, let endpoint, !lost.sameServer(as: endpoint) {
                output.observations.append(
                    .failover(from: lost.endpoint, to: endpoint.endpoint, duration: now - outageStart))
            }
            self.outageStart = nil
            outageEndpoint = nil
            downtimeAccountedUntil = nil
        }
        if !isHealthy {
            isHealthy = true
            output.observations.append(.healthChanged(up: true, failure: nil))
        }
        return output
    }

    /// The probe failed but the connection still works (a query error).
    ///
    /// - Parameter leftTransactionOpen: the failure left the session inside a transaction (or an aborted one):
    ///   a `ROLLBACK` follows on the same connection, and the next probe keeps its schedule.
    public mutating func probeFailed(_ failure: Failure, leftTransactionOpen: Bool, now: MonotonicInstant) -> Output {
        guard case .up(let since, .probing(let started)) = state else { return Output() }
        var output = Output(observations: [.probeFailed(failure)])
        finishProbe(since: since, started: started, rollback: leftTransactionOpen, now: now, into: &output)
        recordFailure(failure, now: now, into: &output)
        return output
    }

    /// The `ROLLBACK` after a probe finished and left no transaction open.
    public mutating func rolledBack(now: MonotonicInstant) -> Output {
        guard case .up(let since, .rollingBack(_, let nextProbe)) = state else { return Output() }
        state = .up(since: since, phase: .waiting(nextProbe: nextProbe))
        return Output()
    }

    /// The password source changed while backing off after a credential failure: try again now, since the
    /// wait was only there to keep a wrong password from locking the account.
    public mutating func credentialsChanged(now: MonotonicInstant) -> Output {
        guard isWaitingOnCredentials else { return Output() }
        var output = Output()
        beginConnecting(now: now, from: .backoff, failure: nil, into: &output)
        return output
    }

    /// Backing off after a credential failure: a changed password source is worth trying at once.
    public var isWaitingOnCredentials: Bool {
        guard case .backoff = state, let backoffReason else { return false }
        return Self.isCredentialFailure(backoffReason)
    }

    /// Backing off after a refused connect, long enough (``reachabilityWatchFloor`` or more) that a cheap check
    /// of the server's port, which costs the server nothing while it refuses, is worth making meanwhile: once the
    /// port accepts, ``endpointReachable(now:)`` connects at once instead of waiting out the rest of the delay.
    public var isWaitingOnReachability: Bool {
        guard case .backoff(_, let delay) = state, backoffReason == .refused else { return false }
        return delay >= Self.reachabilityWatchFloor
    }

    /// Shorter delays than this simply run out: a watch would save little and the port is checked no more often.
    public static let reachabilityWatchFloor: Duration = .seconds(1)

    /// The server's port accepts connections again while backing off after a refused connect: connect now.
    /// The backoff starts again from its first step, since a server that just started listening may still
    /// answer `starting_up` for a moment; as only waits of ``reachabilityWatchFloor`` or more are cut short, a
    /// port that keeps opening and closing still gets a few short steps between two early connects, never a loop.
    public mutating func endpointReachable(now: MonotonicInstant) -> Output {
        guard isWaitingOnReachability else { return Output() }
        backoff.reset()
        var output = Output()
        beginConnecting(now: now, from: .backoff, failure: nil, into: &output)
        return output
    }

    /// Failures that the same credentials will meet again, and that count toward account lockouts.
    public static func isCredentialFailure(_ reason: FailureReason) -> Bool {
        reason == .auth || reason == .databaseMissing
    }

    /// The established session broke: the server closed it, the socket failed, or keepalives gave up.
    public mutating func connectionLost(_ failure: Failure, now: MonotonicInstant) -> Output {
        guard case .up(_, let phase) = state else { return Output() }
        var output = Output(actions: [.closeConnection])
        switch phase {
        case .probing, .rollingBack: break  // the probe broke it: the next one keeps the schedule
        case .waiting, .readingFacts: lastProbeStart = nil  // lost between probes: probe as soon as it is back
        }
        if case .probing = phase { output.observations.append(.probeFailed(failure)) }
        output.observations.append(.disconnected(failure))
        output.observations.append(.reset)
        recordFailure(failure, now: now, into: &output)
        beginBackoff(now: now, from: .up, failure: failure, into: &output)
        return output
    }

    /// The connect asked for by `.openConnection` must wait for its turn: no connect timeout runs meanwhile.
    public mutating func connectDeferred() {
        if case .connecting = state { state = .connecting(started: nil) }
    }

    /// The deferred connect starts now; its timeout and duration count from here.
    public mutating func connectAdmitted(now: MonotonicInstant) {
        if case .connecting(nil) = state { state = .connecting(started: now) }
    }

    /// The deadline passed (see ``deadline``): a timeout, the next probe, or the end of a backoff.
    public mutating func timerFired(now: MonotonicInstant) -> Output {
        guard let deadline, now >= deadline else { return Output() }
        switch state {
        case .idle, .stopped:
            return Output()
        case .connecting:
            let failure = Failure(
                reason: .timeout, message: "connect timed out after \(config.connectTimeout.prometheusString)")
            return connectFailed(failure, now: now)
        case .up(_, .readingFacts), .up(_, .probing), .up(_, .rollingBack):
            let failure = Failure(
                reason: .timeout, message: "no answer within probe_timeout \(config.probeTimeout.prometheusString)")
            return connectionLost(failure, now: now)
        case .up(let since, .waiting):
            state = .up(since: since, phase: .probing(started: now))
            lastProbeStart = now
            return Output(actions: [.sendProbe])
        case .backoff:
            var output = Output()
            beginConnecting(now: now, from: .backoff, failure: nil, into: &output)
            return output
        }
    }

    /// Stops monitoring and closes the session.
    public mutating func stop() -> Output {
        let hadConnection = hasConnection
        state = .stopped
        return Output(actions: hadConnection ? [.closeConnection] : [])
    }

    // MARK: - Transitions

    private mutating func beginConnecting(
        now: MonotonicInstant, from: StateName?, failure: Failure?, into output: inout Output
    ) {
        state = .connecting(started: now)
        backoffReason = nil
        output.actions.append(.openConnection)
        output.observations.append(.connectionAttempt)
        if from != .connecting {
            output.observations.append(.stateChanged(from: from, to: .connecting, failure: failure))
        }
    }

    private mutating func beginBackoff(
        now: MonotonicInstant, from: StateName, failure: Failure, into output: inout Output
    ) {
        let delay = Self.isCredentialFailure(failure.reason) ? credentialBackoff.next() : backoff.next()
        state = .backoff(until: now + delay, delay: delay)
        backoffReason = failure.reason
        output.observations.append(.stateChanged(from: from, to: .backoff, failure: failure))
    }

    /// Counts a failure toward the outage and the health gauge.
    private mutating func recordFailure(_ failure: Failure, now: MonotonicInstant, into output: inout Output) {
        consecutiveFailures += 1
        if outageStart == nil {
            outageStart = now
            outageEndpoint = endpoint
            downtimeAccountedUntil = now
            output.observations.append(.outageStarted)
        } else {
            accountDowntime(now: now, into: &output)
        }
        if isHealthy {
            isHealthy = false
            output.observations.append(.healthChanged(up: false, failure: failure))
        }
    }

    /// Moves on from a finished probe: to a `ROLLBACK` first if it left a transaction open, else to the wait.
    private mutating func finishProbe(
        since: MonotonicInstant, started: MonotonicInstant, rollback: Bool, now: MonotonicInstant,
        into output: inout Output
    ) {
        let next = started + config.probeInterval
        if rollback {
            state = .up(since: since, phase: .rollingBack(started: now, nextProbe: next))
            output.actions.append(.sendRollback)
        } else {
            state = .up(since: since, phase: .waiting(nextProbe: next))
        }
    }

    private mutating func accountDowntime(now: MonotonicInstant, into output: inout Output) {
        guard let accounted = downtimeAccountedUntil, now > accounted else { return }
        output.observations.append(.downtime(now - accounted))
        downtimeAccountedUntil = now
    }

    private func roleMismatch(inRecovery: Bool) -> Failure? {
        config.expect.mismatch(inRecovery: inRecovery)
    }
}

extension ExpectedRole {
    /// The `read_only` failure of a server in the wrong role for this expectation, or `nil`.
    public func mismatch(inRecovery: Bool) -> Failure? {
        switch (self, inRecovery) {
        case (.primary, true):
            Failure(reason: .readOnly, message: "server is in recovery (a standby) but expect is primary")
        case (.standby, false):
            Failure(reason: .readOnly, message: "server is not in recovery (a primary) but expect is standby")
        default:
            nil
        }
    }
}
