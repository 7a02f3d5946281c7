import PGConnCore

/// Connections, shared by sessions and login checks: admission, the password and the lookup (off the loop),
/// the non-blocking connect, closing and cancelling.
extension MonitorLoop {
    /// Opens the slot's connection when its turn comes (at once if fewer than the limit are connecting).
    func open(_ slot: ConnectionSlot, of target: TargetRuntime, now: MonotonicInstant) {
        close(slot, of: target)
        if admission.request(target.token(slot.role), priority: slot.role == .login ? .deferrable : .urgent) {
            slot.admission = .holding
            begin(slot, of: target, now: now)
        } else {
            slot.admission = .waiting
            slot.stage = .waitingTurn
            switch slot.role {
            case .session: target.session.connectDeferred()
            case .login: target.login.deferred()
            case .probe:
                traceProbe(target, "waiting for a connect turn (\(admission.inFlight.count) connects in progress)")
            }
        }
    }

    /// Gives up the slot's turn (or its place in the queue) and lets the next waiting connects start.
    private func releaseAdmission(_ slot: ConnectionSlot, of target: TargetRuntime) {
        guard slot.admission != .none else { return }
        slot.admission = .none
        pendingAdmissions.append(contentsOf: admission.finish(target.token(slot.role)))
    }

    /// Starts the connects admitted since the last call, with their machines' deadlines counted from now.
    func startAdmitted() {
        while running && !pendingAdmissions.isEmpty {
            let batch = pendingAdmissions
            pendingAdmissions = []
            let now = MonotonicInstant.now()
            for token in batch {
                let (id, role) = TargetRuntime.decode(token)
                guard let target = runtime(id) else { continue }
                let slot = target.slot(role)
                guard slot.admission == .waiting else { continue }
                slot.admission = .holding
                switch slot.role {
                case .session: target.session.connectAdmitted(now: now)
                case .login: target.login.admitted(now: now)
                case .probe: traceProbe(target, "connect admitted")
                }
                begin(slot, of: target, now: now)
                reschedule(target)
            }
        }
    }

    /// Starts connecting: the password first (read on a worker), then the lookup, then libpq.
    private func begin(_ slot: ConnectionSlot, of target: TargetRuntime, now: MonotonicInstant) {
        if case .none = target.config.password {
            resolve(slot, of: target, now: now)
            return
        }
        if slot.role == .probe { traceProbe(target, "reading the password (\(Self.describe(target.config.password)))") }
        let ticket = newTicket()
        slot.stage = .readingPassword(ticket: ticket)
        pendingPasswords[ticket] = (target.id, slot.role)
        let source = target.config.password
        let read = environment.readPassword
        files.submit(ticket: ticket) { [weak self] in self?.send(.passwordRead(ticket: ticket, read(source))) }
    }

    /// A password read finished; ignored when its slot was closed or reopened since.
    func passwordRead(ticket: UInt64, _ result: Result<String?, Failure>, now: MonotonicInstant) {
        guard let (id, role) = pendingPasswords.removeValue(forKey: ticket), let target = runtime(id) else { return }
        let slot = target.slot(role)
        guard slot.stage == .readingPassword(ticket: ticket) else { return }
        switch result {
        case .success(let password):
            slot.password = password
            switch role {
            case .session: target.sessionPasswordHash = password?.hashValue
            case .login: target.loginPasswordHash = password?.hashValue
            case .probe: break
            }
            resolve(slot, of: target, now: now)
        case .failure(let failure):
            slot.stage = .idle
            connectFailed(slot, of: target, failure, now: now)
        }
    }

    /// Joins the target's lookup (starting one if none is in flight), or connects at once without names.
    private func resolve(_ slot: ConnectionSlot, of target: TargetRuntime, now: MonotonicInstant) {
        guard let hosts = target.hostsNeedingLookup else {
            connect(slot, of: target, resolved: nil, now: now)
            return
        }
        slot.stage = .resolving
        if slot.role == .probe { traceProbe(target, "resolving \(hosts.joined(separator: ", "))") }
        target.lookup.waiters.insert(slot.role)
        // At most one lookup per target: a connect that timed out while its lookup hung waits for that one.
        guard target.lookup.inFlight == nil else { return }
        let ticket = newTicket()
        target.lookup.inFlight = ticket
        pendingLookups[ticket] = target.id
        let lookUp = environment.lookUp
        let ports = target.dsnValues["port"]
        lookupPool(for: target).submit(ticket: ticket) { [weak self] in
            self?.send(.lookupFinished(ticket: ticket, HostResolver.resolve(hosts, ports: ports, with: lookUp)))
        }
    }

    /// A lookup finished: every slot of the target still waiting for it connects (or fails) now.
    func lookupFinished(ticket: UInt64, _ result: Result<ResolvedHosts, Failure>, now: MonotonicInstant) {
        guard let id = pendingLookups.removeValue(forKey: ticket), let target = runtime(id),
            target.lookup.inFlight == ticket
        else { return }
        let waiters = target.lookup.waiters
        target.lookup = TargetLookup()
        for role in ConnectionRole.allCases where waiters.contains(role) {
            let slot = target.slot(role)
            guard slot.stage == .resolving else { continue }
            switch result {
            case .success(let resolved): connect(slot, of: target, resolved: resolved, now: now)
            case .failure(let failure):
                slot.stage = .idle
                connectFailed(slot, of: target, failure, now: now)
            }
        }
    }

    /// Leaves the target's lookup; one nobody waits for any more is withdrawn if it has not started.
    private func leaveLookup(_ slot: ConnectionSlot, of target: TargetRuntime) {
        target.lookup.waiters.remove(slot.role)
        guard target.lookup.waiters.isEmpty, let ticket = target.lookup.inFlight,
            lookupPool(for: target).withdraw(ticket)
        else { return }
        pendingLookups[ticket] = nil
        target.lookup.inFlight = nil
    }

    /// The probes' own lookup pool for their runtimes, the targets' for theirs.
    private func lookupPool(for target: TargetRuntime) -> WorkerPool {
        probeRuns[target.id] == nil ? lookups : probeLookups
    }

    private func connect(
        _ slot: ConnectionSlot, of target: TargetRuntime, resolved: ResolvedHosts?, now: MonotonicInstant
    ) {
        let purpose: ConnectionParameters.Purpose =
            switch slot.role {
            case .session: .session
            case .login: .loginCheck
            case .probe: .probe
            }
        if slot.role == .probe {
            let address = resolved.map { " (\($0.hostaddr))" } ?? ""
            traceProbe(target, "connecting to \(target.config.summary.host):\(target.config.summary.port)\(address)")
        }
        let overrides = ConnectionParameters.overrides(
            for: target.config, purpose: purpose, dsnValues: target.dsnValues, password: slot.password,
            resolved: resolved, serverTimeouts: target.sendsServerTimeouts)
        slot.password = nil
        slot.stage = .connecting
        if slot.role == .session {
            target.endpoint =
                resolved?.host == nil
                ? Endpoint.of(values: target.dsnValues, hostaddr: resolved?.hostaddr)
                : resolved?.singleHostAddress.flatMap { Endpoint.of(values: target.dsnValues, hostaddr: $0) }
        }
        let factory = environment.connections
        let dsn = target.config.dsn
        submitStep(slot, of: target, connection: nil) { factory.start(dsn: dsn, overrides: overrides) }
    }

    /// Hands the next connect step to a connect worker: the start when `start` is given, else one poll of the
    /// slot's connection, whose socket leaves epoll until the worker answers (``ConnectStep``).
    private func submitStep(
        _ slot: ConnectionSlot, of target: TargetRuntime, connection: (any DatabaseConnection)?,
        start: (@Sendable () -> Result<any DatabaseConnection, Failure>)? = nil
    ) {
        epoll.unwatch(slot.socket)
        slot.socket = -1
        slot.connection = nil  // the worker's until it answers
        let step = ConnectStep(ticket: newTicket(), connection: connection)
        slot.step = step
        let (id, role) = (target.id, slot.role)
        connects.submit(ticket: step.ticket) { [weak self] in
            guard let status = step.run(starting: start) else { return }
            if let self {
                self.send(.connectStep(id: id, role: role, ticket: step.ticket, status))
            } else {
                step.abandon()?.close()
            }
        }
    }

    /// A connect step answered: wait for the socket as libpq asks, or carry on with the connection ready or
    /// failed. Ignored when the slot gave the step up meanwhile (``close(_:of:)`` settled its connection).
    func connectStepFinished(
        id: Int, role: ConnectionRole, ticket: UInt64, _ status: ConnectPollStatus, now: MonotonicInstant
    ) {
        guard let target = runtime(id) else { return }
        let slot = target.slot(role)
        guard let step = slot.step, step.ticket == ticket else { return }
        slot.step = nil
        guard let connection = step.connection else {
            // The start failed: libpq gave no connection.
            slot.stage = .idle
            if case .failed(let failure) = status { connectFailed(slot, of: target, failure, now: now) }
            return
        }
        slot.connection = connection
        // libpq may switch sockets while connecting (the next host or address): register the current one.
        slot.socket = connection.socket
        let token = target.token(role)
        switch status {
        case .wantRead:
            epoll.add(slot.socket, .read, token: token)
        case .wantWrite:
            epoll.add(slot.socket, .write, token: token)
        case .ready:
            slot.stage = .established
            releaseAdmission(slot, of: target)
            epoll.add(slot.socket, .read, token: token)
            switch role {
            case .session: drive(target, target.session.connected(now: now, details: connection.details), now: now)
            case .login: driveLogin(target, target.login.succeeded(now: now), now: now)
            case .probe: if let run = probeRuns[id] { probeConnected(run, now: now) }
            }
        case .failed(let failure):
            connectFailed(slot, of: target, failure, now: now)
        }
    }

    func connectFailed(_ slot: ConnectionSlot, of target: TargetRuntime, _ failure: Failure, now: MonotonicInstant) {
        if slot.role != .login, target.sendsServerTimeouts, ConnectionParameters.refusesOptions(failure) {
            // A pooler: connect again at once without them, within the same attempt and deadline.
            target.sendsServerTimeouts = false
            let note = "server refuses startup options (a pooler?): probes are bounded by cancel requests only"
            if slot.role == .probe {
                traceProbe(target, note + "; connecting again without them")
            } else {
                logger.info("\(note)", metadata: ["target": "\(target.config.name)"])
            }
            open(slot, of: target, now: now)
            return
        }
        switch slot.role {
        case .session: drive(target, target.session.connectFailed(failure, now: now), now: now)
        case .login: driveLogin(target, target.login.failed(failure, now: now), now: now)
        case .probe: if let run = probeRuns[target.id] { finishProbe(run, failure: failure, now: now) }
        }
    }

    /// Closes the slot's connection (or forgets its pending password read, lookup or place in the queue).
    /// A query still running on the server is cancelled from a worker, so nothing is left behind. Idempotent.
    func close(_ slot: ConnectionSlot, of target: TargetRuntime) {
        releaseAdmission(slot, of: target)
        switch slot.stage {
        case .readingPassword(let ticket):
            if files.withdraw(ticket) { pendingPasswords[ticket] = nil }
        case .resolving:
            leaveLookup(slot, of: target)
        default:
            break
        }
        slot.stage = .idle
        slot.password = nil
        if let step = slot.step {
            slot.step = nil
            // Not started: the loop still owns the connection. Started: whoever comes second closes it.
            if connects.withdraw(step.ticket) {
                step.connection?.close()
            } else {
                step.abandon()?.close()
            }
        }
        if slot.query != nil, let connection = slot.connection, !connection.isBad {
            cancelQuery(on: connection, of: target)
        }
        slot.query = nil
        slot.results = []
        slot.resultBytes = 0
        guard let connection = slot.connection else { return }
        epoll.unwatch(slot.socket)
        connection.close()
        slot.connection = nil
        slot.socket = -1
    }

    /// Sends a cancel request for the running query from a worker (`PQcancel` opens a connection and blocks).
    /// At most one per target at a time: the server-side `statement_timeout` bounds the query regardless.
    private func cancelQuery(on connection: any DatabaseConnection, of target: TargetRuntime) {
        guard !target.cancelInFlight, let canceller = connection.makeCanceller() else { return }
        target.cancelInFlight = true
        let id = target.id
        let logger = self.logger
        let name = target.config.name
        cancels.submit(ticket: newTicket()) { [weak self] in
            if let error = canceller.cancel() {
                logger.debug("cancel request failed", metadata: ["target": "\(name)", "message": "\(error)"])
            }
            self?.send(.cancelSent(id: id))
        }
    }

    /// The socket of a connect in progress is ready for what libpq asked: the next step goes to a worker.
    func advanceConnect(_ slot: ConnectionSlot, of target: TargetRuntime) {
        guard slot.step == nil, let connection = slot.connection else { return }
        submitStep(slot, of: target, connection: connection)
    }

    // MARK: - Queries

    /// How far a reply has come.
    enum ReplyProgress {
        /// More is on its way.
        case incomplete
        /// Reading failed: the connection is gone.
        case lost(Failure)
        /// Every result is in (or the reply broke ``SessionReply/limits`` and reading stopped).
        case complete(QueryReply)
    }

    /// Sends a query on an established slot and flushes it; a failure means the connection is unusable.
    /// Probes and on-demand probes run in single-row mode, so their size is counted as rows arrive.
    func sendQuery(_ kind: QueryKind, _ sql: String, on slot: ConnectionSlot, of target: TargetRuntime) -> Failure? {
        guard let connection = slot.connection else { return nil }
        guard connection.sendQuery(sql, singleRow: kind == .probe) else {
            return FailureClassifier.classify(sqlstate: nil, message: connection.errorMessage)
        }
        slot.query = kind
        slot.results = []
        slot.resultBytes = 0
        return flush(slot, of: target)
    }

    /// Sends what libpq has buffered, watching for writability until all is out.
    func flush(_ slot: ConnectionSlot, of target: TargetRuntime) -> Failure? {
        guard let connection = slot.connection else { return nil }
        switch connection.flush() {
        case .success(let done):
            epoll.watch(slot.socket, done ? .read : [.read, .write], token: target.token(slot.role))
            return nil
        case .failure(let failure):
            return failure
        }
    }

    /// Reads what the socket has into the slot's reply (a query must be in flight).
    func readReply(_ slot: ConnectionSlot, _ connection: any DatabaseConnection) -> ReplyProgress {
        if let failure = connection.consumeInput() { return .lost(failure) }
        while !connection.isBusy {
            guard let (result, bytes) = connection.nextResult() else {
                return .complete(reply(slot, connection, overLimit: nil))
            }
            slot.results.append(result)
            slot.resultBytes += bytes
            // libpq returns a COPY status again and again, and the rest of a huge reply is still on the wire:
            // stop reading at once and let the reply discard the connection.
            let overLimit = SessionReply.limits.exceeded(results: slot.results.count, bytes: slot.resultBytes)
            if overLimit != nil || result.status.isUnexpected {
                return .complete(reply(slot, connection, overLimit: overLimit))
            }
        }
        return .incomplete
    }

    /// The reply gathered so far, as the plain value ``SessionReply`` interprets.
    private func reply(_ slot: ConnectionSlot, _ connection: any DatabaseConnection, overLimit: String?) -> QueryReply {
        QueryReply(
            results: slot.results, connectionBad: connection.isBad, errorMessage: connection.errorMessage,
            transactionOpen: connection.isInTransaction, serverVersion: connection.parameterStatus("server_version"),
            overLimit: overLimit)
    }
}
