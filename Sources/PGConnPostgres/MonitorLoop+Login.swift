import PGConnCore

/// The login-check driver: a fresh connection every `login_interval`, opened and closed.
extension MonitorLoop {
    func driveLogin(_ target: TargetRuntime, _ output: LoginCheckStateMachine.Output, now: MonotonicInstant) {
        if !output.observations.isEmpty { observeLogin(target, output.observations) }
        // A smart shutdown waits for every session to end and refuses new ones: a login check refused that way
        // closes the session, so the monitor never holds a shutdown up. It reconnects once the server is back.
        for case .failed(let failure, _) in output.observations where FailureClassifier.isShutdownInProgress(failure) {
            let stepAside = Failure(
                reason: .adminShutdown, sqlstate: "57P03",
                message: "the server is shutting down (a login check was refused: \(failure.message)); "
                    + "the session is closed so that the shutdown can finish")
            drive(target, target.session.connectionLost(stepAside, now: now), now: now)
        }
        for action in output.actions {
            switch action {
            case .openConnection:
                open(target.loginSlot, of: target, now: now)
            case .closeConnection:
                close(target.loginSlot, of: target)
            }
        }
        reschedule(target)
        scheduleCredentialCheck(target, now: now)
    }

    func loginSocketReady(_ target: TargetRuntime, now: MonotonicInstant) {
        let slot = target.loginSlot
        guard slot.stage == .connecting else { return }
        advanceConnect(slot, of: target)
    }
}
