import Testing

@testable import PGConnCore

@Suite struct LoginCheckStateMachineTests {
    typealias Machine = LoginCheckStateMachine
    func at(_ seconds: Double) -> MonotonicInstant { MonotonicInstant(nanoseconds: Int64(seconds * 1e9)) }
    let auth = Failure(reason: .auth, sqlstate: "28P01", message: "password authentication failed")

    /// A machine whose first check is running, and when that check started.
    func running(interval: Duration = .seconds(60), timeout: Duration = .seconds(5)) -> (Machine, MonotonicInstant) {
        var machine = Machine(interval: interval, timeout: timeout, seed: 1)
        #expect(machine.start(now: at(0)) == Machine.Output(), "start only schedules")
        let first = machine.deadline!
        #expect(machine.timerFired(now: first).actions == [.openConnection])
        return (machine, first)
    }

    @Test func firstCheckStartsWithinTheSpreadThenEveryIntervalWithJitter() {
        var (machine, start) = running()
        #expect(start >= at(0) && start < at(10), "the first check starts within min(interval, 10s)")
        #expect(machine.deadline == start + .seconds(5), "connect_timeout bounds the check")
        let ok = machine.succeeded(now: start + .milliseconds(20))
        #expect(ok.actions == [.closeConnection])
        #expect(ok.observations == [.succeeded(duration: .milliseconds(20)), .healthChanged(up: true, failure: nil)])
        let next = machine.deadline!
        #expect(next - start >= .seconds(54) && next - start <= .seconds(66), "interval 60s ±10%, got \(next - start)")
        #expect(machine.timerFired(now: start + .seconds(53)) == Machine.Output())
        #expect(machine.timerFired(now: next).actions == [.openConnection])
        #expect(machine.succeeded(now: next + .milliseconds(10)).observations.count == 1, "no health change to report")
    }

    @Test func targetsWithDifferentSeedsDoNotCheckInLockstep() {
        let starts = (0..<50).map { seed in
            var machine = Machine(interval: .seconds(60), timeout: .seconds(5), seed: UInt64(seed))
            _ = machine.start(now: at(0))
            return machine.deadline!.nanoseconds
        }
        #expect(Set(starts).count == 50)
        #expect(starts.allSatisfy { $0 < 10_000_000_000 })
        let short = Machine(interval: .seconds(2), timeout: .seconds(1), seed: 1)
        #expect(short.startSpread == .seconds(2), "a short interval is its own spread")
    }

    @Test func failureAndRecoveryAreEachReportedOnce() {
        var (machine, start) = running(interval: .seconds(10))
        #expect(machine.failed(auth, now: start + .milliseconds(10)).observations == [
            .failed(auth, duration: .milliseconds(10)), .healthChanged(up: false, failure: auth),
        ])
        _ = machine.timerFired(now: machine.deadline!)
        let second = machine.deadline!
        #expect(machine.failed(auth, now: second).observations.count == 1)
        _ = machine.timerFired(now: machine.deadline!)
        #expect(machine.succeeded(now: machine.deadline!).observations.last == .healthChanged(up: true, failure: nil))
    }

    @Test func aCheckThatHangsTimesOut() {
        var (machine, start) = running(interval: .seconds(10))
        let output = machine.timerFired(now: start + .seconds(5))
        #expect(output.actions == [.closeConnection])
        let timeout = Failure(reason: .timeout, message: "login timed out after 5s")
        #expect(output.observations == [.failed(timeout, duration: .seconds(5)), .healthChanged(up: false, failure: timeout)])
        let next = machine.deadline! - start
        #expect(next >= .seconds(9) && next <= .seconds(11))
    }

    @Test func aDeferredCheckTimesFromItsAdmission() {
        var machine = Machine(interval: .seconds(10), timeout: .seconds(5), seed: 1)
        _ = machine.start(now: at(0))
        let due = machine.deadline!
        #expect(machine.timerFired(now: due).actions == [.openConnection])
        machine.deferred()
        #expect(machine.deadline == nil)
        #expect(machine.succeeded(now: due + .seconds(1)) == Machine.Output())
        machine.admitted(now: due + .seconds(30))
        #expect(machine.deadline == due + .seconds(35))
        #expect(machine.succeeded(now: due + .seconds(30) + .milliseconds(5)).observations.first
            == .succeeded(duration: .milliseconds(5)))
    }

    @Test func intervalZeroTurnsChecksOff() {
        var machine = Machine(interval: .zero, timeout: .seconds(5), seed: 1)
        #expect(!machine.isEnabled)
        #expect(machine.start(now: at(0)) == Machine.Output())
        #expect(machine.deadline == nil)
    }

    @Test func stopClosesARunningCheck() {
        var (machine, start) = running(interval: .seconds(10))
        #expect(machine.stop().actions == [.closeConnection])
        #expect(machine.deadline == nil)
        #expect(machine.succeeded(now: start + .seconds(1)) == Machine.Output())
        var waiting = Machine(interval: .seconds(10), timeout: .seconds(5), seed: 1)
        _ = waiting.start(now: at(0))
        #expect(waiting.stop().actions.isEmpty, "nothing to close between checks")
    }
}

@Suite struct LoginCheckCredentialBackoffTests {
    func at(_ seconds: Double) -> MonotonicInstant { MonotonicInstant(nanoseconds: Int64(seconds * 1e9)) }

    /// A login check with a wrong password every 60 s would make 15 failed logins in 15 minutes: enough to lock
    /// an LDAP/AD account. After a credential failure it waits on the credential backoff instead.
    @Test func aCredentialFailureStretchesTheWaitUntilThePasswordChanges() {
        var machine = LoginCheckStateMachine(
            interval: .seconds(1), timeout: .seconds(1), seed: 3,
            backoff: BackoffConfig(initial: .seconds(1), max: .seconds(4), multiplier: 2, jitter: 0))
        _ = machine.start(now: at(0))
        let started = machine.deadline!
        _ = machine.timerFired(now: started)
        let auth = Failure(reason: .auth, sqlstate: "28P01", message: "password authentication failed")
        _ = machine.failed(auth, now: started + .milliseconds(10))
        #expect(machine.isWaitingOnCredentials)
        #expect(machine.deadline == started + .seconds(60), "at least a minute, not the 1 s interval")
        #expect(machine.credentialsChanged(now: started + .seconds(5)) == LoginCheckStateMachine.Output())
        #expect(machine.deadline == started + .seconds(5), "a changed password is checked at once")
        #expect(!machine.isWaitingOnCredentials)
        let refused = Failure(reason: .tooManyConnections, sqlstate: "53300", message: "too many connections")
        _ = machine.timerFired(now: started + .seconds(5))
        _ = machine.failed(refused, now: started + .seconds(5.1))
        #expect(!machine.isWaitingOnCredentials, "other failures keep the interval")
        #expect(machine.deadline! < started + .seconds(7))
    }
}
