import PGConnCore

/// The session driver: carries out the session machine's actions and turns socket readiness into its events.
extension MonitorLoop {
    /// Applies a session output: metrics and logs first, then the actions, which may feed more events.
    func drive(_ target: TargetRuntime, _ output: SessionStateMachine.Output, now: MonotonicInstant) {
        if !output.observations.isEmpty { observe(target, output.observations, now: now) }
        for action in output.actions {
            switch action {
            case .openConnection:
                open(target.sessionSlot, of: target, now: now)
            case .sendFactsQuery:
                send(target, .facts, SessionQueries.facts, now: now)
            case .sendProbe:
                send(target, .probe, SessionQueries.probe(for: target.config), now: now)
            case .sendRollback:
                send(target, .rollback, SessionQueries.rollback, now: now)
            case .closeConnection:
                close(target.sessionSlot, of: target)
            }
        }
        reschedule(target)
        scheduleCredentialCheck(target, now: now)
        watchReachability(target, now: now)
    }

    private func send(_ target: TargetRuntime, _ kind: QueryKind, _ sql: String, now: MonotonicInstant) {
        guard target.sessionSlot.connection != nil else { return }
        if let failure = sendQuery(kind, sql, on: target.sessionSlot, of: target) {
            drive(target, target.session.connectionLost(failure, now: now), now: now)
        }
    }

    func sessionSocketReady(_ target: TargetRuntime, _ event: Epoll.Event, now: MonotonicInstant) {
        let slot = target.sessionSlot
        guard let connection = slot.connection else { return }
        if slot.stage == .connecting {
            advanceConnect(slot, of: target)
            return
        }
        if event.writable && slot.query != nil {
            if let failure = flush(slot, of: target) {
                drive(target, target.session.connectionLost(failure, now: now), now: now)
            }
            guard slot.connection === connection else { return }
        }
        guard event.readable || event.hangup else { return }
        guard let kind = slot.query else {
            // Idle: a notice or parameter status, nothing to do, unless the server closed the connection.
            if let failure = connection.consumeInput() {
                drive(target, target.session.connectionLost(failure, now: now), now: now)
            }
            return
        }
        switch readReply(slot, connection) {
        case .incomplete: break
        case .lost(let failure): drive(target, target.session.connectionLost(failure, now: now), now: now)
        case .complete(let reply): finishQuery(target, kind, reply, now: now)
        }
    }

    /// Hands the finished reply to the machine. The slot keeps `query` set for a reply that discards the
    /// connection, so closing it cancels what may still run on the server.
    private func finishQuery(_ target: TargetRuntime, _ kind: QueryKind, _ reply: QueryReply, now: MonotonicInstant) {
        let slot = target.sessionSlot
        let event: SessionReply.Event =
            switch kind {
            case .facts: SessionReply.facts(reply)
            case .probe: SessionReply.probe(reply, roleChecked: target.config.expect != .any)
            case .rollback: SessionReply.rollback(reply)
            }
        if case .lost = event {
        } else {
            slot.query = nil
            slot.results = []
            slot.resultBytes = 0
        }
        switch event {
        case .lost(let failure):
            drive(target, target.session.connectionLost(failure, now: now), now: now)
        case .facts(let facts):
            drive(target, target.session.factsRead(facts, now: now), now: now)
        case .probeSucceeded(let inRecovery, let open, let replayLag):
            drive(
                target,
                target.session.probeSucceeded(
                    inRecovery: inRecovery, replayLag: replayLag, leftTransactionOpen: open, now: now),
                now: now)
        case .probeFailed(let failure, let open):
            drive(target, target.session.probeFailed(failure, leftTransactionOpen: open, now: now), now: now)
        case .rolledBack:
            drive(target, target.session.rolledBack(now: now), now: now)
        }
    }

    // MARK: - A changed password during a credential backoff

    /// While the session or the login check waits after a credential failure, a password file is read every
    /// ``credentialCheckInterval`` (on a worker); a different password ends the wait (``credentialsRead``).
    func scheduleCredentialCheck(_ target: TargetRuntime, now: MonotonicInstant) {
        guard target.scheduledCredentialCheck == nil, case .file = target.config.password else { return }
        guard target.session.isWaitingOnCredentials || target.login.isWaitingOnCredentials else { return }
        let at = now + Self.credentialCheckInterval
        target.scheduledCredentialCheck = at
        timers.push(at, TimerTag(id: target.id, kind: .credentials))
    }

    static let credentialCheckInterval: Duration = .seconds(2)

    func checkCredentials(_ target: TargetRuntime) {
        let id = target.id
        let source = target.config.password
        let read = environment.readPassword
        files.submit(ticket: newTicket()) { [weak self] in self?.send(.credentialsRead(id: id, read(source))) }
    }

    func credentialsRead(_ target: TargetRuntime, _ result: Result<String?, Failure>, now: MonotonicInstant) {
        if case .success(let password) = result {
            let hash = password?.hashValue
            let session = target.session.isWaitingOnCredentials && hash != target.sessionPasswordHash
            let login = target.login.isWaitingOnCredentials && hash != target.loginPasswordHash
            if session || login {
                logger.info("password file changed: trying it now", metadata: ["target": "\(target.config.name)"])
            }
            if session { drive(target, target.session.credentialsChanged(now: now), now: now) }
            if login { driveLogin(target, target.login.credentialsChanged(now: now), now: now) }
        }
        target.scheduledCredentialCheck = nil
        scheduleCredentialCheck(target, now: now)
    }
}
