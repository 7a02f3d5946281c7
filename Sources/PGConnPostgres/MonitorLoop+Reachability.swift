import PGConnCore

/// The sessions backing off after a refused connect, by the endpoint they wait for, and the checks in flight.
///
/// Every ``interval`` each endpoint with waiters gets one port check (``Endpoint/accepts(_:timeout:)``, on a
/// worker); when one accepts, all its waiters reconnect at once (through the connect admission) instead of
/// waiting out backoffs of up to `backoff.max`. One check per endpoint, however many targets share it: a
/// PgBouncer in front of 5,000 targets is checked four times a second, not 20,000.
struct ReachabilityWatch {
    struct Watch {
        var waiters: Set<Int> = []
        var checking = false
    }

    static let interval: Duration = .milliseconds(250)

    private(set) var watches: [Endpoint: Watch] = [:]
    /// The loop's one reachability timer, while any endpoint is watched.
    var scheduled: MonotonicInstant?

    var isEmpty: Bool { watches.isEmpty }

    mutating func add(_ id: Int, waitingFor endpoint: Endpoint) {
        watches[endpoint, default: Watch()].waiters.insert(id)
    }

    /// Drops the waiters `stillWaiting` rejects (they reconnected on their own, were removed, or moved) and the
    /// endpoints nobody waits for, then marks the rest as being checked: the endpoints to check now.
    mutating func startChecks(stillWaiting: (Int, Endpoint) -> Bool) -> [Endpoint] {
        var due: [Endpoint] = []
        for (endpoint, var watch) in watches {
            watch.waiters = watch.waiters.filter { stillWaiting($0, endpoint) }
            if watch.waiters.isEmpty && !watch.checking {
                watches[endpoint] = nil
                continue
            }
            if !watch.checking && !watch.waiters.isEmpty {
                watch.checking = true
                due.append(endpoint)
            }
            watches[endpoint] = watch
        }
        return due
    }

    /// A check answered: the waiters to wake when the port accepts (the watch ends), else none.
    mutating func finished(_ endpoint: Endpoint, accepts: Bool) -> Set<Int> {
        guard var watch = watches[endpoint] else { return [] }
        if accepts {
            watches[endpoint] = nil
            return watch.waiters
        }
        watch.checking = false
        watches[endpoint] = watch
        return []
    }
}

/// While sessions back off after a refused connect, their servers' ports are checked; a port that accepts
/// again ends their waits (``SessionStateMachine/endpointReachable(now:)``).
extension MonitorLoop {
    func watchReachability(_ target: TargetRuntime, now: MonotonicInstant) {
        guard target.session.isWaitingOnReachability, let endpoint = target.endpoint else { return }
        reachability.add(target.id, waitingFor: endpoint)
        scheduleReachabilityTimer(now: now)
    }

    private func scheduleReachabilityTimer(now: MonotonicInstant) {
        guard reachability.scheduled == nil, !reachability.isEmpty else { return }
        let at = now + ReachabilityWatch.interval
        reachability.scheduled = at
        timers.push(at, TimerTag(id: 0, kind: .reachability))
    }

    func reachabilityTimerFired(at deadline: MonotonicInstant, now: MonotonicInstant) {
        guard reachability.scheduled == deadline else { return }
        reachability.scheduled = nil
        let due = reachability.startChecks { id, endpoint in
            guard let target = targetsByID[id] else { return false }
            return target.endpoint == endpoint && target.session.isWaitingOnReachability
        }
        let accepts = environment.accepts
        for endpoint in due {
            reachabilityChecks.submit(ticket: newTicket()) { [weak self] in
                let open = accepts(endpoint)
                self?.send(.endpointChecked(endpoint, accepts: open))
            }
        }
        scheduleReachabilityTimer(now: now)
    }

    func endpointChecked(_ endpoint: Endpoint, accepts: Bool, now: MonotonicInstant) {
        let woken = reachability.finished(endpoint, accepts: accepts).compactMap { targetsByID[$0] }.filter {
            $0.endpoint == endpoint && $0.session.isWaitingOnReachability
        }
        if !woken.isEmpty {
            logger.info(
                "server accepts connections again: reconnecting now",
                metadata: ["endpoint": "\(endpoint)", "sessions": "\(woken.count)"])
        }
        for target in woken.sorted(by: { $0.id < $1.id }) {
            drive(target, target.session.endpointReachable(now: now), now: now)
        }
        scheduleReachabilityTimer(now: now)
    }
}
