import PGConnCore

/// The login-check driver: a fresh connection every `login_interval`, opened and closed.
extension MonitorLoop {
    func driveLogin(_ target: TargetRuntime, _ output: LoginCheckStateMachine.Output, now: MonotonicInstant) {
        if !output.observations.isEmpty { observeLogin(target, output.observations) }
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
