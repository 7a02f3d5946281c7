import Testing

@testable import PGConnCore

/// Scripts of the session lifecycle, one event at a time, with a manual clock.
@Suite struct SessionStateMachineTests {
    typealias Machine = SessionStateMachine

    static let config = TargetConfig(
        name: "primary", dsn: "host=db",
        summary: DSNSummary(host: "db", port: "5432", database: "postgres", user: "u", sslmode: "prefer"),
        probeInterval: .seconds(5), probeTimeout: .seconds(2), connectTimeout: .seconds(3),
        backoff: BackoffConfig(initial: .seconds(1), max: .seconds(4), multiplier: 2, jitter: 0))

    func at(_ seconds: Double) -> MonotonicInstant { MonotonicInstant(nanoseconds: Int64(seconds * 1e9)) }
    let refused = Failure(reason: .refused, message: "Connection refused")
    let terminated = Failure(reason: .adminShutdown, sqlstate: "57P01", message: "terminating connection")

    /// A machine that is up with facts read and the first probe answered at t=0.1.
    func upMachine(config: TargetConfig = Self.config) -> Machine {
        var machine = Machine(config: config, seed: 1)
        _ = machine.start(now: at(0))
        _ = machine.connected(now: at(0.05))
        _ = machine.factsRead(ServerFacts(version: "15.18"), now: at(0.06))
        _ = machine.probeSucceeded(inRecovery: nil, now: at(0.1))
        return machine
    }

    // MARK: Which server, switches and failovers

    static let db1 = ConnectionDetails(host: "db1", port: "5432")
    static let db2 = ConnectionDetails(host: "db2", port: "5432")

    /// Up on `first` at t=0.1, the session lost at t=10, reconnected to `second` at t=13.1 (after a refused
    /// attempt), the probe answered at t=13.2; returns what the last connect and the last probe observed.
    func outage(from first: ConnectionDetails, to second: ConnectionDetails) -> (
        connect: [Machine.Observation], probe: [Machine.Observation]
    ) {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        _ = machine.connected(now: at(0.05), details: first)
        _ = machine.factsRead(ServerFacts(version: "15.18"), now: at(0.06))
        _ = machine.probeSucceeded(inRecovery: nil, now: at(0.1))
        _ = machine.connectionLost(terminated, now: at(10))
        _ = machine.timerFired(now: at(11))
        _ = machine.connectFailed(refused, now: at(11.01))
        _ = machine.timerFired(now: at(13.01))  // the second backoff step: 2 s
        let connect = machine.connected(now: at(13.1), details: second).observations
        _ = machine.factsRead(ServerFacts(version: "15.18"), now: at(13.15))
        let probe = machine.probeSucceeded(inRecovery: nil, now: at(13.2)).observations
        #expect(machine.endpoint == second)
        return (connect, probe)
    }

    @Test func anOutageEndingOnAnotherServerIsAFailoverMeasuredFromTheFirstFailure() {
        let (connect, probe) = outage(from: Self.db1, to: Self.db2)
        #expect(connect.contains(.endpoint(Self.db2)))
        #expect(connect.contains(.hostSwitched(from: "db1:5432", to: "db2:5432")))
        #expect(probe.contains(.outageEnded(duration: .milliseconds(3200))))
        #expect(probe.contains(.failover(from: "db1:5432", to: "db2:5432", duration: .milliseconds(3200))))
    }

    @Test func anOutageOfOneServerThatComesBackIsNoFailover() {
        let (connect, probe) = outage(from: Self.db1, to: Self.db1)
        #expect(connect.contains(.endpoint(Self.db1)))
        #expect(!connect.contains { if case .hostSwitched = $0 { true } else { false } })
        #expect(probe.contains(.outageEnded(duration: .milliseconds(3200))))
        #expect(!probe.contains { if case .failover = $0 { true } else { false } })
    }

    @Test func anOutageBeforeAnyConnectionIsNoFailover() {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        _ = machine.connectFailed(refused, now: at(0.01))
        _ = machine.timerFired(now: at(1.01))
        _ = machine.connected(now: at(1.05), details: Self.db2)
        _ = machine.factsRead(nil, now: at(1.06))
        let probe = machine.probeSucceeded(inRecovery: nil, now: at(1.1)).observations
        #expect(probe.contains(.outageEnded(duration: .milliseconds(1090))))
        #expect(!probe.contains { if case .failover = $0 { true } else { false } })
    }

    @Test func startOpensAConnectionAndCountsTheAttempt() {
        var machine = Machine(config: Self.config, seed: 1)
        #expect(machine.stateName == nil)
        #expect(machine.deadline == nil)
        let output = machine.start(now: at(0))
        #expect(output.actions == [.openConnection])
        #expect(output.observations == [.connectionAttempt, .stateChanged(from: nil, to: .connecting, failure: nil)])
        #expect(machine.stateName == .connecting)
        #expect(machine.deadline == at(3))
        #expect(machine.start(now: at(1)) == Machine.Output(), "a second start is ignored")
    }

    @Test func connectedReadsFactsThenProbes() {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        let connected = machine.connected(now: at(0.25))
        #expect(connected.actions == [.sendFactsQuery])
        #expect(
            connected.observations == [
                .connected(duration: .milliseconds(250)), .stateChanged(from: .connecting, to: .up, failure: nil),
            ])
        #expect(machine.deadline == at(2.25), "the facts query has probe_timeout")

        let facts = ServerFacts(version: "15.18", inRecovery: false, startTime: 1000)
        let read = machine.factsRead(facts, now: at(0.3))
        #expect(read.actions == [.sendProbe])
        #expect(read.observations == [.facts(facts)])

        let probed = machine.probeSucceeded(inRecovery: false, now: at(0.31))
        #expect(probed.actions.isEmpty)
        #expect(
            probed.observations == [
                .probeSucceeded(duration: .milliseconds(10), inRecovery: false), .healthChanged(up: true, failure: nil),
            ])
        #expect(machine.isHealthy)
        #expect(machine.deadline == at(5.3), "next probe one interval after this one started")
    }

    @Test func factsTheServerCannotAnswerAreSkipped() {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        _ = machine.connected(now: at(0.1))
        let read = machine.factsRead(nil, now: at(0.2))
        #expect(read == Machine.Output(actions: [.sendProbe], observations: []))
    }

    @Test func probesRunEveryIntervalAndSuccessIsNotLoggedAgain() {
        var machine = upMachine()
        #expect(machine.timerFired(now: at(4.9)) == Machine.Output(), "an early timer does nothing")
        #expect(machine.timerFired(now: at(5.06)).actions == [.sendProbe])
        let second = machine.probeSucceeded(inRecovery: nil, now: at(5.07))
        #expect(second.observations == [.probeSucceeded(duration: .milliseconds(10), inRecovery: nil)])
        #expect(machine.deadline == at(10.06))
    }

    @Test func connectFailureBacksOffExponentiallyAndCapped() {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        let failed = machine.connectFailed(refused, now: at(0.01))
        #expect(failed.actions == [.closeConnection])
        #expect(
            failed.observations == [
                .connectionFailed(refused, duration: .milliseconds(10)), .outageStarted,
                .stateChanged(from: .connecting, to: .backoff, failure: refused),
            ])
        #expect(machine.stateName == .backoff)
        #expect(machine.backoffDelay == .seconds(1))
        #expect(machine.consecutiveFailures == 1)

        var now = 0.01
        var delays: [Duration] = [machine.backoffDelay]
        for _ in 0..<4 {
            now += machine.backoffDelay.seconds
            let retry = machine.timerFired(now: at(now))
            #expect(retry.actions == [.openConnection])
            #expect(
                retry.observations == [
                    .connectionAttempt, .stateChanged(from: .backoff, to: .connecting, failure: nil),
                ])
            _ = machine.connectFailed(refused, now: at(now))
            delays.append(machine.backoffDelay)
        }
        #expect(delays == [.seconds(1), .seconds(2), .seconds(4), .seconds(4), .seconds(4)])
        #expect(machine.consecutiveFailures == 5)
    }

    @Test func connectTimeoutIsAFailureWithReasonTimeout() {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        let output = machine.timerFired(now: at(3))
        #expect(output.actions == [.closeConnection])
        guard case .connectionFailed(let failure, let duration) = output.observations.first else {
            Issue.record("expected a connection failure, got \(output.observations)")
            return
        }
        #expect(failure.reason == .timeout)
        #expect(failure.message == "connect timed out after 3s")
        #expect(duration == .seconds(3))
        #expect(machine.stateName == .backoff)
    }

    @Test func terminatedSessionIsCountedResetAndReconnected() {
        var machine = upMachine()
        let lost = machine.connectionLost(terminated, now: at(1))
        #expect(lost.actions == [.closeConnection])
        #expect(
            lost.observations == [
                .disconnected(terminated), .reset, .outageStarted, .healthChanged(up: false, failure: terminated),
                .stateChanged(from: .up, to: .backoff, failure: terminated),
            ])
        #expect(!machine.isHealthy)
        #expect(machine.deadline == at(2), "first reconnect after backoff.initial")
        #expect(machine.timerFired(now: at(2)).actions == [.openConnection])
        _ = machine.connected(now: at(2.1))
        _ = machine.factsRead(nil, now: at(2.2))
        let back = machine.probeSucceeded(inRecovery: nil, now: at(2.5))
        #expect(
            back.observations == [
                .probeSucceeded(duration: .milliseconds(300), inRecovery: nil), .downtime(.milliseconds(1500)),
                .outageEnded(duration: .milliseconds(1500)), .healthChanged(up: true, failure: nil),
            ])
        #expect(machine.consecutiveFailures == 0)
    }

    @Test func successfulProbeResetsTheBackoff() {
        var machine = upMachine()
        _ = machine.connectionLost(terminated, now: at(1))
        _ = machine.timerFired(now: at(2))
        _ = machine.connectFailed(refused, now: at(2))
        #expect(machine.backoffDelay == .seconds(2))
        _ = machine.timerFired(now: at(4))
        _ = machine.connected(now: at(4))
        _ = machine.factsRead(nil, now: at(4))
        _ = machine.probeSucceeded(inRecovery: nil, now: at(4))
        _ = machine.connectionLost(terminated, now: at(5))
        #expect(machine.backoffDelay == .seconds(1))
    }

    @Test func lossDuringAProbeAlsoFailsTheProbe() {
        var machine = upMachine()
        _ = machine.timerFired(now: at(5.06))
        let lost = machine.connectionLost(terminated, now: at(5.1))
        #expect(lost.observations.prefix(3) == [.probeFailed(terminated), .disconnected(terminated), .reset])
    }

    @Test func probeTimeoutDiscardsTheSession() {
        var machine = upMachine()
        _ = machine.timerFired(now: at(5.06))
        #expect(machine.deadline == at(7.06))
        let output = machine.timerFired(now: at(7.06))
        #expect(output.actions == [.closeConnection])
        let timeout = Failure(reason: .timeout, message: "no answer within probe_timeout 2s")
        #expect(output.observations.prefix(3) == [.probeFailed(timeout), .disconnected(timeout), .reset])
        #expect(machine.stateName == .backoff)
    }

    @Test func factsQueryTimeoutDiscardsTheSession() {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        _ = machine.connected(now: at(0))
        let output = machine.timerFired(now: at(2))
        #expect(output.actions == [.closeConnection])
        #expect(
            output.observations.first
                == .disconnected(Failure(reason: .timeout, message: "no answer within probe_timeout 2s")))
    }

    @Test func queryErrorKeepsTheSessionWhenNoTransactionIsLeftOpen() {
        var machine = upMachine()
        _ = machine.timerFired(now: at(5.06))
        let error = Failure(reason: .queryError, sqlstate: "42P01", message: "relation does not exist")
        let output = machine.probeFailed(error, leftTransactionOpen: false, now: at(5.07))
        #expect(output.actions.isEmpty)
        #expect(
            output.observations == [.probeFailed(error), .outageStarted, .healthChanged(up: false, failure: error)])
        #expect(machine.stateName == .up)
        #expect(machine.deadline == at(10.06))
    }

    @Test func queryErrorInsideATransactionIsRolledBackOnTheSameConnection() {
        var machine = upMachine()
        _ = machine.timerFired(now: at(5.06))
        let error = Failure(reason: .queryError, sqlstate: "22012", message: "division by zero")
        let output = machine.probeFailed(error, leftTransactionOpen: true, now: at(5.07))
        #expect(output.actions == [.sendRollback], "no reset, no reconnect")
        #expect(
            output.observations == [.probeFailed(error), .outageStarted, .healthChanged(up: false, failure: error)])
        #expect(machine.deadline == at(7.07), "the ROLLBACK has probe_timeout")
        #expect(machine.rolledBack(now: at(5.08)) == Machine.Output())
        #expect(machine.deadline == at(10.06), "the probe schedule goes on")
        #expect(machine.timerFired(now: at(10.06)).actions == [.sendProbe])
    }

    @Test func aSuccessfulProbeThatLeavesATransactionOpenIsRolledBack() {
        var machine = upMachine()
        _ = machine.timerFired(now: at(5.06))
        let output = machine.probeSucceeded(inRecovery: nil, leftTransactionOpen: true, now: at(5.07))
        #expect(output.actions == [.sendRollback])
        #expect(output.observations == [.probeSucceeded(duration: .milliseconds(10), inRecovery: nil)])
        let stuck = machine.timerFired(now: at(7.07))
        #expect(stuck.actions == [.closeConnection], "a ROLLBACK that does not answer discards the session")
    }

    /// The storm: `BEGIN; SELECT 1/0; COMMIT` once made 300 connections a second. Whatever a probe does to its
    /// connection, the next probe waits for its schedule.
    @Test func aProbeThatBreaksItsConnectionRunsOncePerInterval() {
        var machine = upMachine()
        _ = machine.timerFired(now: at(5.06))
        let broke = Failure(reason: .adminShutdown, sqlstate: "57P01", message: "terminating connection")
        _ = machine.connectionLost(broke, now: at(5.07))
        #expect(machine.timerFired(now: at(6.07)).actions == [.openConnection])
        _ = machine.connected(now: at(6.08))
        let facts = machine.factsRead(nil, now: at(6.09))
        #expect(facts.actions == [], "no probe before 10.06")
        #expect(machine.deadline == at(10.06))
        #expect(machine.timerFired(now: at(10.06)).actions == [.sendProbe])
    }

    @Test func aSessionLostBetweenProbesIsProbedAsSoonAsItIsBack() {
        var machine = upMachine()
        _ = machine.connectionLost(terminated, now: at(1))
        _ = machine.timerFired(now: at(2))
        _ = machine.connected(now: at(2.1))
        #expect(machine.factsRead(nil, now: at(2.2)).actions == [.sendProbe])
    }

    @Test func credentialFailuresBackOffSlowlyUntilThePasswordChanges() {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        let auth = Failure(reason: .auth, sqlstate: "28P01", message: "password authentication failed")
        _ = machine.connectFailed(auth, now: at(0.1))
        #expect(machine.backoffDelay == .seconds(60), "at least a minute, not backoff.initial")
        #expect(machine.backoffReason == .auth)
        _ = machine.timerFired(now: at(60.1))
        _ = machine.connectFailed(auth, now: at(60.2))
        #expect(machine.backoffDelay == .seconds(120))
        let changed = machine.credentialsChanged(now: at(70))
        #expect(changed.actions == [.openConnection], "a new password is tried at once")
        #expect(machine.stateName == .connecting)
        _ = machine.connectFailed(refused, now: at(70.1))
        #expect(machine.backoffDelay == .seconds(1), "other reasons keep their own schedule")
        #expect(machine.credentialsChanged(now: at(70.2)) == Machine.Output(), "only a credential failure waits for it")
    }

    @Test func aPortThatAcceptsAgainEndsALongRefusedBackoffAndRestartsTheSchedule() {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        _ = machine.connectFailed(refused, now: at(0.1))
        #expect(machine.backoffDelay == .seconds(1))
        #expect(machine.isWaitingOnReachability, "a wait of a second is worth watching the port")
        _ = machine.timerFired(now: at(1.1))
        _ = machine.connectFailed(refused, now: at(1.2))
        #expect(machine.backoffDelay == .seconds(2))

        let woken = machine.endpointReachable(now: at(1.5))
        #expect(woken.actions == [.openConnection])
        #expect(
            woken.observations == [.connectionAttempt, .stateChanged(from: .backoff, to: .connecting, failure: nil)])
        #expect(machine.endpointReachable(now: at(1.6)) == Machine.Output(), "only a backoff is cut short")

        // The server listens but is still starting: the schedule starts again from its first step.
        let starting = Failure(reason: .startingUp, sqlstate: "57P03", message: "the database system is starting up")
        _ = machine.connectFailed(starting, now: at(1.6))
        #expect(machine.backoffDelay == .seconds(1))
        #expect(!machine.isWaitingOnReachability, "the port accepts already: only the backoff applies")
        #expect(machine.endpointReachable(now: at(1.7)) == Machine.Output())
    }

    @Test func onlyLongRefusedWaitsAreWatched() {
        let quick = TargetConfig(
            name: "quick", dsn: "host=db", summary: Self.config.summary,
            backoff: BackoffConfig(initial: .milliseconds(250), max: .seconds(5), multiplier: 2, jitter: 0))
        var machine = Machine(config: quick, seed: 1)
        _ = machine.start(now: at(0))
        _ = machine.connectFailed(refused, now: at(0))
        #expect(!machine.isWaitingOnReachability, "250ms simply runs out")
        _ = machine.timerFired(now: at(0.25))
        _ = machine.connectFailed(refused, now: at(0.25))
        #expect(!machine.isWaitingOnReachability, "500ms too")
        _ = machine.timerFired(now: at(0.75))
        _ = machine.connectFailed(Failure(reason: .timeout, message: "connect timed out"), now: at(0.75))
        #expect(machine.backoffDelay == .seconds(1))
        #expect(!machine.isWaitingOnReachability, "a host that does not answer is not checked")
        _ = machine.timerFired(now: at(1.75))
        _ = machine.connectFailed(Failure(reason: .auth, message: "password authentication failed"), now: at(1.75))
        #expect(!machine.isWaitingOnReachability, "nor one that refuses the password")
    }

    @Test func aNewPostmasterStartTimeIsAServerRestart() {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        _ = machine.connected(now: at(0.1))
        #expect(!machine.factsRead(ServerFacts(startTime: 1000), now: at(0.2)).observations.contains(.serverRestarted))
        _ = machine.probeSucceeded(inRecovery: nil, now: at(0.3))
        _ = machine.connectionLost(terminated, now: at(1))
        _ = machine.timerFired(now: at(2))
        _ = machine.connected(now: at(2.1))
        let same = machine.factsRead(ServerFacts(startTime: 1000.4), now: at(2.2))
        #expect(!same.observations.contains(.serverRestarted), "within 0.5 s: the same postmaster (float rounding)")
        _ = machine.connectionLost(terminated, now: at(3))
        _ = machine.timerFired(now: at(5))
        _ = machine.connected(now: at(5.1))
        let restarted = machine.factsRead(ServerFacts(startTime: 2000), now: at(5.2))
        #expect(restarted.observations == [.facts(ServerFacts(startTime: 2000)), .serverRestarted])
    }

    @Test(arguments: [
        (ExpectedRole.primary, true, true), (.primary, false, false), (.standby, false, true), (.standby, true, false),
        (.any, true, false), (.any, false, false),
    ])
    func wrongRoleFailsTheProbeWithReadOnly(expect: ExpectedRole, inRecovery: Bool, fails: Bool) {
        var config = Self.config
        config.expect = expect
        var machine = Machine(config: config, seed: 1)
        _ = machine.start(now: at(0))
        _ = machine.connected(now: at(0))
        _ = machine.factsRead(nil, now: at(0))
        let output = machine.probeSucceeded(inRecovery: inRecovery, now: at(0.01))
        if fails {
            guard case .probeFailed(let failure) = output.observations.first else {
                Issue.record("expected a failed probe, got \(output.observations)")
                return
            }
            #expect(failure.reason == .readOnly)
            #expect(!machine.isHealthy)
            #expect(machine.stateName == .up, "the session is kept: the role may change back")
        } else {
            #expect(machine.isHealthy)
        }
    }

    @Test func downtimeGrowsDuringAnOutage() {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        _ = machine.connectFailed(refused, now: at(0))
        _ = machine.timerFired(now: at(1))
        let second = machine.connectFailed(refused, now: at(1))
        #expect(second.observations.contains(.downtime(.seconds(1))))
        #expect(!second.observations.contains(.outageStarted), "one outage, however many failures")
    }

    @Test func aDeferredConnectHasNoTimeoutUntilAdmitted() {
        var machine = Machine(config: Self.config, seed: 1)
        _ = machine.start(now: at(0))
        machine.connectDeferred()
        #expect(machine.deadline == nil, "waiting for a turn is not a slow server")
        #expect(machine.stateName == .connecting)
        #expect(machine.timerFired(now: at(100)) == Machine.Output())
        #expect(machine.connected(now: at(100)) == Machine.Output(), "nothing can connect before its turn")
        machine.connectAdmitted(now: at(50))
        #expect(machine.deadline == at(53))
        #expect(machine.connected(now: at(50.25)).observations.first == .connected(duration: .milliseconds(250)))
        machine.connectAdmitted(now: at(60))
        #expect(machine.stateName == .up, "admission outside connecting is ignored")
    }

    @Test func stopClosesTheConnectionAndIgnoresLaterEvents() {
        var machine = upMachine()
        #expect(machine.stop().actions == [.closeConnection])
        #expect(machine.deadline == nil)
        #expect(machine.connectionLost(terminated, now: at(9)) == Machine.Output())
        var backingOff = Machine(config: Self.config, seed: 1)
        _ = backingOff.start(now: at(0))
        _ = backingOff.connectFailed(refused, now: at(0))
        #expect(backingOff.stop().actions.isEmpty, "nothing to close while backing off")
    }

    @Test func eventsInTheWrongStateAreIgnored() {
        var machine = Machine(config: Self.config, seed: 1)
        #expect(machine.connected(now: at(0)) == Machine.Output())
        #expect(machine.probeSucceeded(inRecovery: nil, now: at(0)) == Machine.Output())
        #expect(machine.timerFired(now: at(100)) == Machine.Output())
        _ = machine.start(now: at(0))
        #expect(machine.factsRead(nil, now: at(0)) == Machine.Output())
        #expect(machine.connectionLost(terminated, now: at(0)) == Machine.Output())
    }
}
