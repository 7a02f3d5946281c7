public import PGConnCore
import PGConnSync
import Synchronization

/// What `/probe` asks the monitor for: one fresh connect, the query and the close.
public struct ProbeOrder: Sendable {
    public typealias Subject = ProbeSubject

    public var subject: Subject
    /// The whole probe's budget: the connect and the query together.
    public var timeout: Duration

    public init(_ subject: Subject, timeout: Duration) {
        self.subject = subject
        self.timeout = timeout
    }

    /// Requests with the same key share one run (and one connection): a probed target never sees more than one
    /// connection of the exporter's probes at a time.
    var key: String {
        switch subject {
        case .configured(let name): "target:" + name
        case .discovered(let config): "module:" + config.name
        }
    }
}

/// Hands a probe's result to whoever asked, once.
final class ProbeCompletion: Sendable {
    private let handler: Lock<(@Sendable (ProbeResult) -> Void)?>

    init(_ handler: @escaping @Sendable (ProbeResult) -> Void) { self.handler = Lock(handler) }

    func finish(_ result: ProbeResult) {
        guard let handler = handler.withLock({ $0.take() }) else { return }
        handler(result)
    }
}

/// One on-demand probe in progress: a runtime of its own (so the connection code is the targets'), and every
/// request waiting for it, each with its own deadline.
final class ProbeRun {
    struct Waiter {
        var deadline: MonotonicInstant
        var completion: ProbeCompletion
    }

    let runtime: TargetRuntime
    let key: String
    let started: MonotonicInstant
    /// The first request's deadline; the run ends by then.
    let deadline: MonotonicInstant
    var waiters: [Waiter]
    var connected: MonotonicInstant?
    var querySent: MonotonicInstant?
    var trace: [ProbeResult.TraceLine] = []

    init(runtime: TargetRuntime, key: String, started: MonotonicInstant, first: Waiter) {
        self.runtime = runtime
        self.key = key
        self.started = started
        self.deadline = first.deadline
        self.waiters = [first]
    }
}

/// The on-demand probe driver: a connection on a runtime of its own, the target's query with the role query,
/// and the close, all on the loop with the same non-blocking machinery (admission, password and lookup on
/// workers, `PQconnectPoll`) as sessions.
extension MonitorLoop {
    func startProbe(_ order: ProbeOrder, _ completion: ProbeCompletion, now: MonotonicInstant) {
        let waiter = ProbeRun.Waiter(deadline: now + order.timeout, completion: completion)
        if let id = probeRunsByKey[order.key], let run = probeRuns[id] {
            run.waiters.append(waiter)
            traceProbe(run, at: now, "another request joined (timeout \(order.timeout.prometheusString))")
            if waiter.deadline < run.deadline {
                timers.push(waiter.deadline, TimerTag(id: run.runtime.id, kind: .probe))
            }
            return
        }
        if let (failure, remaining) = probeCredentialHold.holding(order.key, now: now) {
            completion.finish(
                .failed(
                    failure,
                    note: "not connecting: the last probe's credentials failed; the next try is allowed in "
                        + "\(Int(remaining.seconds.rounded(.up)))s (so probes cannot lock the account)"))
            return
        }
        let config: TargetConfig
        // What the target's session learnt: a pooler that refuses startup options is not asked again.
        var sendsServerTimeouts = true
        switch order.subject {
        case .configured(let name):
            guard let target = targets.first(where: { $0.config.name == name }) else {
                completion.finish(.failed(Failure(reason: .other, message: "no configured target named \(name)")))
                return
            }
            if target.session.isWaitingOnCredentials || target.login.isWaitingOnCredentials {
                let reason = target.session.isWaitingOnCredentials ? target.session.backoffReason ?? .auth : .auth
                let failure = Failure(
                    reason: reason,
                    message: "the target's credentials failed and its session or login check is backing off")
                completion.finish(
                    .failed(
                        failure,
                        note: "not connecting while the target backs off after a credential failure "
                            + "(so probes cannot lock the account)"))
                return
            }
            config = target.config.forProbe(timeout: order.timeout)
            sendsServerTimeouts = target.sendsServerTimeouts
        case .discovered(let discovered):
            config = discovered.forProbe(timeout: order.timeout)
        }
        let runtime = TargetRuntime(id: nextTargetID, config: config, seed: seed &+ UInt64(nextTargetID))
        nextTargetID += 1
        runtime.sendsServerTimeouts = sendsServerTimeouts
        let run = ProbeRun(runtime: runtime, key: order.key, started: now, first: waiter)
        probeRuns[runtime.id] = run
        probeRunsByKey[order.key] = runtime.id
        timers.push(run.deadline, TimerTag(id: runtime.id, kind: .probe))
        traceProbe(
            run, at: now,
            "probing \(config.name): \(config.summary.user)@\(config.summary.host):\(config.summary.port)/"
                + "\(config.summary.database), timeout \(order.timeout.prometheusString)")
        open(runtime.probeSlot, of: runtime, now: now)
    }

    /// The probe's connection is ready: send the query.
    func probeConnected(_ run: ProbeRun, now: MonotonicInstant) {
        let slot = run.runtime.probeSlot
        guard let connection = slot.connection else { return }
        run.connected = now
        var connectedTo = "connected"
        if let details = connection.details {
            connectedTo += " to \(details.endpoint)"
            if let tls = details.tls { connectedTo += " over \(tls.version) (\(tls.cipher))" }
        }
        traceProbe(
            run, at: now, "\(connectedTo), server_version \(connection.parameterStatus("server_version") ?? "unknown")")
        run.querySent = now
        traceProbe(run, at: now, "sending the query")
        let sql = SessionQueries.onDemandProbe(for: run.runtime.config)
        if let failure = sendQuery(.probe, sql, on: slot, of: run.runtime) {
            finishProbe(run, failure: failure, now: now)
        }
    }

    func probeSocketReady(_ run: ProbeRun, _ event: Epoll.Event, now: MonotonicInstant) {
        let slot = run.runtime.probeSlot
        guard let connection = slot.connection else { return }
        if slot.stage == .connecting {
            advanceConnect(slot, of: run.runtime)
            return
        }
        if event.writable, slot.query != nil, let failure = flush(slot, of: run.runtime) {
            finishProbe(run, failure: failure, now: now)
            return
        }
        guard event.readable || event.hangup, slot.query != nil else { return }
        switch readReply(slot, connection) {
        case .incomplete:
            break
        case .lost(let failure):
            finishProbe(run, failure: failure, now: now)
        case .complete(let reply):
            traceProbe(run, at: now, "answered: \(reply.results.count) results, \(slot.resultBytes) bytes")
            // A reply that must not go on (too large, a COPY) keeps `query` set, so the close cancels what runs.
            if SessionReply.lostConnection(reply) == nil { slot.query = nil }
            let (failure, inRecovery) = ProbeResult.evaluate(reply, expect: run.runtime.config.expect)
            finishProbe(run, failure: failure, inRecovery: inRecovery, now: now)
        }
    }

    /// A deadline of the run passed: its own (the probe times out) or an earlier one of a request that joined.
    func probeDeadlinePassed(_ run: ProbeRun, now: MonotonicInstant) {
        if run.deadline <= now {
            let timeout = run.deadline - run.started
            finishProbe(
                run,
                failure: Failure(
                    reason: .timeout,
                    message:
                        "no answer within \(timeout.prometheusString) while \(Self.phase(of: run.runtime.probeSlot))"),
                now: now)
            return
        }
        let (due, waiting) = run.waiters.reduce(into: ([ProbeRun.Waiter](), [ProbeRun.Waiter]())) { split, waiter in
            if waiter.deadline <= now { split.0.append(waiter) } else { split.1.append(waiter) }
        }
        run.waiters = waiting
        for waiter in due {
            var result = result(
                of: run, failure: Failure(reason: .timeout, message: "no answer within this request's timeout"),
                now: now)
            result.trace.append(
                .init(at: now - run.started, text: "this request's timeout passed; the probe goes on for others"))
            waiter.completion.finish(result)
        }
    }

    /// Ends the run: closes its connection (cancelling a query still running on the server) and answers
    /// every request waiting for it.
    func finishProbe(_ run: ProbeRun, failure: Failure?, inRecovery: Bool? = nil, now: MonotonicInstant) {
        guard probeRuns[run.runtime.id] === run else { return }
        probeCredentialHold.record(run.key, failure: failure, now: now)
        let slot = run.runtime.probeSlot
        let cancels = slot.query != nil && slot.connection.map { !$0.isBad } == true
        var result = result(of: run, failure: failure, now: now)
        result.inRecovery = inRecovery
        close(slot, of: run.runtime)
        probeRuns[run.runtime.id] = nil
        if probeRunsByKey[run.key] == run.runtime.id { probeRunsByKey[run.key] = nil }
        if let failure { result.trace.append(.init(at: result.duration, text: "failed: \(failure.description)")) }
        result.trace.append(
            .init(at: result.duration, text: cancels ? "closed, cancel request sent for the query" : "closed"))
        for waiter in run.waiters { waiter.completion.finish(result) }
        run.waiters = []
    }

    /// Every probe in progress fails: the monitor is stopping.
    func stopProbes(now: MonotonicInstant) {
        for run in Array(probeRuns.values) {
            finishProbe(run, failure: Failure(reason: .other, message: "the exporter is shutting down"), now: now)
        }
    }

    private func result(of run: ProbeRun, failure: Failure?, now: MonotonicInstant) -> ProbeResult {
        let connectEnd = run.connected ?? now
        return ProbeResult(
            failure: failure, duration: now - run.started, connectDuration: connectEnd - run.started,
            queryDuration: run.querySent.map { now - $0 } ?? .zero,
            serverVersion: run.connected == nil
                ? nil : run.runtime.probeSlot.connection?.parameterStatus("server_version"),
            tls: run.connected == nil ? nil : run.runtime.probeSlot.connection?.details?.tls,
            trace: run.trace)
    }

    /// Adds a line to the trace of the probe that `target` is the runtime of.
    func traceProbe(_ target: TargetRuntime, _ text: String) {
        guard let run = probeRuns[target.id] else { return }
        traceProbe(run, at: MonotonicInstant.now(), text)
    }

    private func traceProbe(_ run: ProbeRun, at now: MonotonicInstant, _ text: String) {
        run.trace.append(.init(at: now - run.started, text: text))
    }

    /// What the probe's connection was doing, for a timeout's message.
    private static func phase(of slot: ConnectionSlot) -> String {
        switch slot.stage {
        case .idle, .waitingTurn: "waiting for a connect turn"
        case .readingPassword: "reading the password"
        case .resolving: "resolving the host name"
        case .connecting: "connecting (TCP, TLS, authentication)"
        case .established: slot.query == nil ? "closing" : "running the query"
        }
    }

    /// A password source for a trace: where it comes from, never the password.
    static func describe(_ source: PasswordSource) -> String {
        switch source {
        case .none: "none"
        case .file(let path): "password_file \(path)"
        case .environment(let name): "password_env \(name)"
        }
    }
}
