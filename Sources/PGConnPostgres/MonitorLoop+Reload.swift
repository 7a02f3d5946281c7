import Dispatch
import PGConnCore
import PGConnSync
import Synchronization

/// What a reload did, by target name.
public struct ReloadSummary: Sendable, Equatable {
    public var added: [String] = []
    public var removed: [String] = []
    /// Changed settings applied to the running session.
    public var reconfigured: [String] = []
    /// Changed connection settings: the session was closed and opened again (counters kept).
    public var reconnected: [String] = []
    public var unchanged: [String] = []

    public var description: String {
        "\(added.count) added, \(removed.count) removed, \(reconfigured.count) reconfigured, "
            + "\(reconnected.count) reconnected, \(unchanged.count) unchanged"
    }
}

/// The loop's answer to a reload, waited for by the thread that asked.
final class ReloadCompletion: Sendable {
    private let result = Lock<ReloadSummary?>(nil)
    private let done = DispatchSemaphore(value: 0)

    func finish(_ summary: ReloadSummary) {
        result.withLock { $0 = summary }
        done.signal()
    }

    func wait(timeout: Duration) -> ReloadSummary? {
        guard done.wait(timeout: .now() + .nanoseconds(Int(timeout.nanoseconds))) == .success else { return nil }
        return result.withLock { $0 }
    }
}

/// Hot reload on the loop: targets are matched by name and keep their id, so their epoll tokens, timers,
/// tickets and series stay theirs.
extension MonitorLoop {
    func reload(_ config: ValidatedConfig, now: MonotonicInstant) -> ReloadSummary {
        var summary = ReloadSummary()
        var old = Dictionary(uniqueKeysWithValues: targets.map { ($0.config.name, $0) })
        var next: [TargetRuntime] = []
        var fresh: [TargetRuntime] = []
        for newConfig in config.targets {
            guard let current = old.removeValue(forKey: newConfig.name) else {
                let target = TargetRuntime(id: nextTargetID, config: newConfig, seed: seed &+ UInt64(nextTargetID))
                nextTargetID += 1
                next.append(target)
                fresh.append(target)
                summary.added.append(newConfig.name)
                continue
            }
            if current.config == newConfig {
                next.append(current)
                summary.unchanged.append(newConfig.name)
            } else if newConfig.keepsConnection(of: current.config) {
                reconfigure(current, newConfig, now: now)
                next.append(current)
                summary.reconfigured.append(newConfig.name)
            } else {
                retire(current, now: now)
                let target = TargetRuntime(id: current.id, config: newConfig, seed: seed &+ UInt64(current.id))
                target.reported = current.reported
                next.append(target)
                fresh.append(target)
                summary.reconnected.append(newConfig.name)
            }
        }
        for removed in old.values {
            retire(removed, now: now)
            summary.removed.append(removed.config.name)
        }
        summary.removed.sort()
        targets = next
        targetsByID = Dictionary(uniqueKeysWithValues: next.map { ($0.id, $0) })
        metrics.setTargets(next.map { ($0.id, $0.config) })
        unreported = next.count { !$0.reported }
        published.setReady(unreported == 0)
        for target in fresh {
            drive(target, target.session.start(now: now), now: now)
            driveLogin(target, target.login.start(now: now), now: now)
        }
        return summary
    }

    /// Settings that do not touch the connection: the machines take them as they run. A changed login
    /// interval or connect timeout restarts the login schedule (closing a check in progress).
    private func reconfigure(_ target: TargetRuntime, _ config: TargetConfig, now: MonotonicInstant) {
        let loginChanged =
            config.loginInterval != target.config.loginInterval
            || config.connectTimeout != target.config.connectTimeout
        target.config = config
        target.session.reconfigure(config)
        if loginChanged {
            driveLogin(target, target.login.stop(), now: now)
            target.login = LoginCheckStateMachine(
                interval: config.loginInterval, timeout: config.connectTimeout, seed: ~(seed &+ UInt64(target.id)),
                backoff: config.backoff)
            driveLogin(target, target.login.start(now: now), now: now)
        }
        reschedule(target)
    }

    /// Closes a target's connections for good (a cancel request follows a query in flight).
    private func retire(_ target: TargetRuntime, now: MonotonicInstant) {
        drive(target, target.session.stop(), now: now)
        driveLogin(target, target.login.stop(), now: now)
    }
}
