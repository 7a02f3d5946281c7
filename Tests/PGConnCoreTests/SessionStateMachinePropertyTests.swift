import Testing

@testable import PGConnCore

/// Random event sequences against invariants that every script must keep, whatever the order of events.
///
/// The I/O code relies on these: a connection is opened only when none is held and closed whenever the machine
/// leaves it, health flips alternate, a deadline always exists while monitoring, and probes never come closer
/// together than `probe_interval`, whatever breaks in between (no reconnect-and-probe storm).
@Suite struct SessionStateMachinePropertyTests {
    enum Event: CaseIterable {
        case connected, connectFailed, authFailed, facts, probeOK, probeOKInTransaction, probeWrongRole, probeError,
            probeErrorInTransaction, rolledBack, lost, timer, deferred, admitted, credentialsChanged
    }

    @Test(arguments: 0..<200)
    func invariantsHoldForRandomEventSequences(seed: UInt64) {
        var config = SessionStateMachineTests.config
        config.expect = .primary
        var machine = SessionStateMachine(config: config, seed: seed)
        var random = SplitMix64(seed: seed &* 7919)
        var now = MonotonicInstant.zero
        var holdsConnection = false
        var lastHealth: Bool?
        var lastProbe: MonotonicInstant?
        var output = machine.start(now: now)
        holdsConnection = apply(output, holding: holdsConnection, lastHealth: &lastHealth)
        let longestBackoff = BackoffConfig.credentialFailures(after: config.backoff).max

        for _ in 0..<300 {
            now = now + .milliseconds(Int64(random.next() % 3000))
            let event = Event.allCases[Int(random.next() % UInt64(Event.allCases.count))]
            let before = machine.consecutiveFailures
            switch event {
            case .connected: output = machine.connected(now: now)
            case .connectFailed: output = machine.connectFailed(Failure(reason: .refused, message: "x"), now: now)
            case .authFailed: output = machine.connectFailed(Failure(reason: .auth, message: "x"), now: now)
            case .probeOKInTransaction: output = machine.probeSucceeded(inRecovery: false, leftTransactionOpen: true, now: now)
            case .rolledBack: output = machine.rolledBack(now: now)
            case .credentialsChanged: output = machine.credentialsChanged(now: now)
            case .facts: output = machine.factsRead(ServerFacts(inRecovery: false), now: now)
            case .probeOK: output = machine.probeSucceeded(inRecovery: false, now: now)
            case .probeWrongRole: output = machine.probeSucceeded(inRecovery: true, now: now)
            case .probeError:
                output = machine.probeFailed(
                    Failure(reason: .queryError, message: "x"), leftTransactionOpen: false, now: now)
            case .probeErrorInTransaction:
                output = machine.probeFailed(
                    Failure(reason: .queryError, message: "x"), leftTransactionOpen: true, now: now)
            case .lost: output = machine.connectionLost(Failure(reason: .adminShutdown, message: "x"), now: now)
            case .timer:
                if let deadline = machine.deadline, deadline > now { now = deadline }
                output = machine.timerFired(now: now)
            case .deferred:
                machine.connectDeferred()
                output = SessionStateMachine.Output()
            case .admitted:
                machine.connectAdmitted(now: now)
                output = SessionStateMachine.Output()
            }
            holdsConnection = apply(output, holding: holdsConnection, lastHealth: &lastHealth)
            if output.actions.contains(.sendProbe) {
                if let lastProbe {
                    #expect(now - lastProbe >= config.probeInterval, "seed \(seed): \(event) probed too soon")
                }
                lastProbe = now
            }

            #expect(holdsConnection == machine.hasConnection, "seed \(seed): \(event) left \(machine.state)")
            #expect(machine.stateName != nil)
            let waitingForTurn = machine.state == .connecting(started: nil)
            #expect((machine.deadline != nil) != waitingForTurn, "seed \(seed): a deadline unless waiting for a turn")
            if output.observations.contains(where: { if case .probeSucceeded = $0 { true } else { false } }) {
                #expect(machine.consecutiveFailures == 0 && machine.isHealthy)
            } else if machine.consecutiveFailures != before {
                #expect(machine.consecutiveFailures == before + 1, "failures grow one at a time")
            }
            #expect((machine.backoffDelay > .zero) == (machine.stateName == .backoff))
            #expect(machine.backoffDelay <= longestBackoff)
        }
    }

    /// Carries out the actions on a model of the I/O code; returns whether a connection is held afterwards.
    private func apply(
        _ output: SessionStateMachine.Output, holding: Bool, lastHealth: inout Bool?
    ) -> Bool {
        var holding = holding
        for action in output.actions {
            switch action {
            case .openConnection:
                #expect(!holding, "opened while a connection is held")
                holding = true
            case .closeConnection:
                #expect(holding, "closed without a connection")
                holding = false
            case .sendFactsQuery, .sendProbe, .sendRollback:
                #expect(holding, "a query needs a connection")
            }
        }
        for case .healthChanged(let up, _) in output.observations {
            #expect(lastHealth != up, "health flips alternate")
            lastHealth = up
        }
        return holding
    }
}
