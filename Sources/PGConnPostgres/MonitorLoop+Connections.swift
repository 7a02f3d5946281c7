import PGConnCore

/// Connections, shared by sessions and login checks: admission, the password and the lookup (off the loop),
/// the non-blocking connect, closing and cancelling.
extension MonitorLoop {
    /// Opens the slot's connection when its turn comes (at once if fewer than the limit are connecting).
    func open(_ slot: ConnectionSlot, of target: TargetRuntime, now: MonotonicInstant) {
        close(slot, of: target)
        if admission.request(target.token(slot.role)) {
            slot.admission = .holding
            begin(slot, of: target, now: now)
        } else {
            slot.admission = .waiting
            slot.stage = .waitingTurn
            switch slot.role {
            case .session: target.session.connectDeferred()
            case .login: target.login.deferred()
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
                guard let target = targetsByID[Int(token >> 1)] else { continue }
                let slot = target.slot(token & 1 == 0 ? .session : .login)
                guard slot.admission == .waiting else { continue }
                slot.admission = .holding
                switch slot.role {
                case .session: target.session.connectAdmitted(now: now)
                case .login: target.login.admitted(now: now)
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
        let ticket = newTicket()
        slot.stage = .readingPassword(ticket: ticket)
        pendingPasswords[ticket] = (target.id, slot.role)
        let source = target.config.password
        let read = environment.readPassword
        files.submit(ticket: ticket) { [weak self] in self?.send(.passwordRead(ticket: ticket, read(source))) }
    }

    /// A password read finished; ignored when its slot was closed or reopened since.
    func passwordRead(ticket: UInt64, _ result: Result<String?, Failure>, now: MonotonicInstant) {
        guard let (id, role) = pendingPasswords.removeValue(forKey: ticket), let target = targetsByID[id] else { return }
        let slot = target.slot(role)
        guard slot.stage == .readingPassword(ticket: ticket) else { return }
        switch result {
        case .success(let password):
            slot.password = password
            switch role {
            case .session: target.sessionPasswordHash = password?.hashValue
            case .login: target.loginPasswordHash = password?.hashValue
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
            connect(slot, of: target, hostaddr: nil, now: now)
            return
        }
        slot.stage = .resolving
        target.lookup.waiters.insert(slot.role)
        // At most one lookup per target: a connect that timed out while its lookup hung waits for that one.
        guard target.lookup.inFlight == nil else { return }
        let ticket = newTicket()
        target.lookup.inFlight = ticket
        pendingLookups[ticket] = target.id
        let lookUp = environment.lookUp
        lookups.submit(ticket: ticket) { [weak self] in
            self?.send(.lookupFinished(ticket: ticket, HostResolver.resolve(hosts, with: lookUp)))
        }
    }

    /// A lookup finished: every slot of the target still waiting for it connects (or fails) now.
    func lookupFinished(ticket: UInt64, _ result: Result<String, Failure>, now: MonotonicInstant) {
        guard let id = pendingLookups.removeValue(forKey: ticket), let target = targetsByID[id],
            target.lookup.inFlight == ticket
        else { return }
        let waiters = target.lookup.waiters
        target.lookup = TargetLookup()
        for role in [ConnectionRole.session, .login] where waiters.contains(role) {
            let slot = target.slot(role)
            guard slot.stage == .resolving else { continue }
            switch result {
            case .success(let hostaddr): connect(slot, of: target, hostaddr: hostaddr, now: now)
            case .failure(let failure):
                slot.stage = .idle
                connectFailed(slot, of: target, failure, now: now)
            }
        }
    }

    /// Leaves the target's lookup; one nobody waits for any more is withdrawn if it has not started.
    private func leaveLookup(_ slot: ConnectionSlot, of target: TargetRuntime) {
        target.lookup.waiters.remove(slot.role)
        guard target.lookup.waiters.isEmpty, let ticket = target.lookup.inFlight, lookups.withdraw(ticket) else { return }
        pendingLookups[ticket] = nil
        target.lookup.inFlight = nil
    }

    private func connect(_ slot: ConnectionSlot, of target: TargetRuntime, hostaddr: String?, now: MonotonicInstant) {
        let purpose: ConnectionParameters.Purpose = slot.role == .session ? .session : .loginCheck
        let overrides = ConnectionParameters.overrides(
            for: target.config, purpose: purpose, dsnValues: target.dsnValues, password: slot.password,
            hostaddr: hostaddr, serverTimeouts: target.sendsServerTimeouts)
        slot.password = nil
        switch environment.connections.start(dsn: target.config.dsn, overrides: overrides) {
        case .failure(let failure):
            slot.stage = .idle
            connectFailed(slot, of: target, failure, now: now)
        case .success(let connection):
            slot.connection = connection
            slot.stage = .connecting
            slot.socket = connection.socket
            epoll.add(connection.socket, .write, token: target.token(slot.role))
        }
    }

    func connectFailed(_ slot: ConnectionSlot, of target: TargetRuntime, _ failure: Failure, now: MonotonicInstant) {
        if slot.role == .session, target.sendsServerTimeouts, ConnectionParameters.refusesOptions(failure) {
            // A pooler: connect again at once without them, within the same attempt and deadline.
            target.sendsServerTimeouts = false
            logger.info(
                "server refuses startup options (a pooler?): probes are bounded by cancel requests only",
                metadata: ["target": "\(target.config.name)"])
            open(slot, of: target, now: now)
            return
        }
        switch slot.role {
        case .session: drive(target, target.session.connectFailed(failure, now: now), now: now)
        case .login: driveLogin(target, target.login.failed(failure, now: now), now: now)
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

    /// Advances a connect in progress; returns true once the connection is ready.
    func advanceConnect(_ slot: ConnectionSlot, of target: TargetRuntime, now: MonotonicInstant) -> Bool {
        guard let connection = slot.connection else { return false }
        let status = connection.poll()
        let token = target.token(slot.role)
        // libpq may switch sockets while connecting (the next host or address): move the registration along.
        if connection.socket != slot.socket {
            epoll.unwatch(slot.socket)
            slot.socket = connection.socket
            if slot.socket >= 0 { epoll.add(slot.socket, .write, token: token) }
        }
        switch status {
        case .wantRead:
            epoll.watch(slot.socket, .read, token: token)
        case .wantWrite:
            epoll.watch(slot.socket, .write, token: token)
        case .ready:
            slot.stage = .established
            releaseAdmission(slot, of: target)
            return true
        case .failed(let failure):
            connectFailed(slot, of: target, failure, now: now)
        }
        return false
    }
}
