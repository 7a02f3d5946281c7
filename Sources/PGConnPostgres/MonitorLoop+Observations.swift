import Glibc
import Logging
import PGConnCore

/// What the machines observed, written to the metrics store and the log.
///
/// The log gets one line per state change and per health flip, but a target failing the same way again and
/// again (``FailureLogState``) logs the first failure, a summary every five minutes, and its recovery, so a
/// fleet of broken targets cannot flood stderr; the repeats are logged at debug level.
extension MonitorLoop {
    func observe(_ target: TargetRuntime, _ observations: [SessionStateMachine.Observation], now: MonotonicInstant) {
        let wallClock = Self.wallClockNow()
        metrics.update(target.id) { series in
            for observation in observations { series.apply(observation, wallClock: wallClock, now: now) }
            series.sync(with: target.session)
        }
        let name = "\(target.config.name)"
        for observation in observations {
            switch observation {
            case .stateChanged(let from, let to, let failure):
                logStateChange(target, from: from, to: to, failure: failure, now: now, wallClock: wallClock)
            case .healthChanged(let up, let failure):
                var metadata: Logger.Metadata = ["target": "\(name)", "up": "\(up ? 1 : 0)"]
                Self.describe(failure, into: &metadata)
                logger.log(level: up ? .info : .warning, up ? "probe succeeding" : "probe failing", metadata: metadata)
                var outage: Duration?
                for case .outageEnded(let duration) in observations { outage = duration }
                metrics.recordEvent(
                    target.id,
                    TargetEvent(
                        time: wallClock, kind: .probe,
                        from: target.probeFlipped ? (up ? "failing" : "succeeding") : "start",
                        to: up ? "succeeding" : "failing", failure: failure, outage: up ? outage : nil))
                target.probeFlipped = true
            case .serverRestarted:
                logger.warning("server restarted", metadata: ["target": "\(name)"])
            case .hostSwitched(let from, let to):
                logger.info(
                    "session on another server", metadata: ["target": "\(name)", "from": "\(from)", "to": "\(to)"])
                metrics.recordEvent(target.id, TargetEvent(time: wallClock, kind: .server, from: from, to: to))
            case .failover(let from, let to, let duration):
                logger.warning(
                    "failover",
                    metadata: [
                        "target": "\(name)", "from": "\(from)", "to": "\(to)",
                        "duration_seconds": "\((duration.seconds * 1000).rounded() / 1000)",
                    ])
                metrics.recordEvent(
                    target.id, TargetEvent(time: wallClock, kind: .failover, from: from, to: to, outage: duration))
            case .probeSucceeded, .probeFailed, .connectionFailed:
                if !target.reported {
                    target.reported = true
                    unreported -= 1
                    if unreported == 0 { published.setReady(true) }
                }
            default:
                break
            }
        }
    }

    private func logStateChange(
        _ target: TargetRuntime, from: SessionStateMachine.StateName?, to: SessionStateMachine.StateName,
        failure: Failure?, now: MonotonicInstant, wallClock: Double
    ) {
        var metadata: Logger.Metadata = [
            "target": "\(target.config.name)", "from": "\(from?.rawValue ?? "start")", "to": "\(to.rawValue)",
        ]
        Self.describe(failure, into: &metadata)
        if let failure, to == .backoff {
            switch target.failureLog.failed(failure, now: now) {
            case .log:
                break
            case .suppress:
                logger.debug("session state changed", metadata: metadata)  // every attempt, at debug level
                return
            case .summary(let repeats):
                metadata["repeated"] = "\(repeats)"
                logger.warning("session still failing", metadata: metadata)
                return
            }
        } else if to == .connecting && from == .backoff && target.failureLog.isFailing {
            logger.debug("session state changed", metadata: metadata)  // each retry of a failure already logged
            return
        } else if to == .up {
            let repeats = target.failureLog.succeeded()
            if repeats > 0 { metadata["repeated"] = "\(repeats)" }
        }
        logger.log(level: to == .backoff ? .warning : .info, "session state changed", metadata: metadata)
        metrics.recordEvent(
            target.id,
            TargetEvent(
                time: wallClock, kind: .state, from: from?.rawValue ?? "start", to: to.rawValue, failure: failure))
    }

    func observeLogin(_ target: TargetRuntime, _ observations: [LoginCheckStateMachine.Observation]) {
        metrics.update(target.id) { series in
            for observation in observations { series.apply(observation) }
        }
        for case .healthChanged(let up, let failure) in observations {
            metrics.recordEvent(
                target.id,
                TargetEvent(
                    time: Self.wallClockNow(), kind: .login,
                    from: target.loginFlipped ? (up ? "failing" : "succeeding") : "start",
                    to: up ? "succeeding" : "failing", failure: failure))
            target.loginFlipped = true
            var metadata: Logger.Metadata = ["target": "\(target.config.name)", "login_up": "\(up ? 1 : 0)"]
            Self.describe(failure, into: &metadata)
            logger.log(
                level: up ? .info : .warning, up ? "login check succeeding" : "login check failing", metadata: metadata)
        }
    }

    private static func describe(_ failure: Failure?, into metadata: inout Logger.Metadata) {
        guard let failure else { return }
        metadata["reason"] = "\(failure.reason.rawValue)"
        if let sqlstate = failure.sqlstate { metadata["sqlstate"] = "\(sqlstate)" }
        metadata["message"] = "\(failure.message)"
    }

    static func wallClockNow() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}
