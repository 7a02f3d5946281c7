import Testing

@testable import PGConnCore

@Suite struct LoginCheckStateMachineTests {
    typealias Machine = LoginCheckStateMachine
    func at(_ seconds: Double) -> MonotonicInstant { MonotonicInstant(nanoseconds: Int64(seconds * 1e9)) }
    let auth = Failure(reason: .auth, sqlstate: "28P01", message: "password authentication failed")

    @Test func firstCheckRunsAtStartThenEveryInterval() {
        var machine = Machine(interval: .seconds(60), timeout: .seconds(5))
        #expect(machine.start(now: at(0)).actions == [.openConnection])
        #expect(machine.deadline == at(5))
        let ok = machine.succeeded(now: at(0.02))
        #expect(ok.actions == [.closeConnection])
        #expect(ok.observations == [.succeeded(duration: .milliseconds(20)), .healthChanged(up: true, failure: nil)])
        #expect(machine.deadline == at(60))
        #expect(machine.timerFired(now: at(59)) == Machine.Output())
        #expect(machine.timerFired(now: at(60)).actions == [.openConnection])
        #expect(machine.succeeded(now: at(60.01)).observations == [.succeeded(duration: .milliseconds(10))])
    }

    @Test func failureAndRecoveryAreEachReportedOnce() {
        var machine = Machine(interval: .seconds(10), timeout: .seconds(5))
        _ = machine.start(now: at(0))
        #expect(machine.failed(auth, now: at(0.01)).observations == [
            .failed(auth, duration: .milliseconds(10)), .healthChanged(up: false, failure: auth),
        ])
        _ = machine.timerFired(now: at(10))
        #expect(machine.failed(auth, now: at(10.01)).observations == [.failed(auth, duration: .milliseconds(10))])
        _ = machine.timerFired(now: at(20))
        #expect(machine.succeeded(now: at(20.01)).observations.last == .healthChanged(up: true, failure: nil))
    }

    @Test func aCheckThatHangsTimesOut() {
        var machine = Machine(interval: .seconds(10), timeout: .seconds(5))
        _ = machine.start(now: at(0))
        let output = machine.timerFired(now: at(5))
        #expect(output.actions == [.closeConnection])
        let timeout = Failure(reason: .timeout, message: "login timed out after 5s")
        #expect(output.observations == [.failed(timeout, duration: .seconds(5)), .healthChanged(up: false, failure: timeout)])
        #expect(machine.deadline == at(10))
    }

    @Test func intervalZeroTurnsChecksOff() {
        var machine = Machine(interval: .zero, timeout: .seconds(5))
        #expect(!machine.isEnabled)
        #expect(machine.start(now: at(0)) == Machine.Output())
        #expect(machine.deadline == nil)
    }

    @Test func stopClosesARunningCheck() {
        var machine = Machine(interval: .seconds(10), timeout: .seconds(5))
        _ = machine.start(now: at(0))
        #expect(machine.stop().actions == [.closeConnection])
        #expect(machine.deadline == nil)
        #expect(machine.succeeded(now: at(1)) == Machine.Output())
    }
}
