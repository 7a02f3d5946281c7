import CLinux
import Foundation
import Glibc
public import Logging
public import PGConnCore
import Synchronization

/// Watches every target from one I/O thread: epoll for sockets, a deadline heap for timers, libpq's
/// non-blocking API for connects and queries.
///
/// Each target has a ``SessionStateMachine`` and a ``LoginCheckStateMachine``; this class only carries out
/// their actions and feeds them events, and writes their observations into the ``MetricsStore``. No call on
/// this thread blocks (host names are resolved by ``HostResolver`` on worker threads), so one black-holed host
/// never delays another target, and HTTP threads never wait on this one: they read the store.
///
/// `@unchecked Sendable`: every mutable property is touched only on the I/O thread, except `commands`
/// (a mutex) and `reportedTargets` (an atomic), which are the only ways in from other threads.
public final class Monitor: @unchecked Sendable {
    enum Command {
        case stop
        case lookupFinished(ticket: UInt64, Result<[String], Failure>)
    }

    /// Targets in config order, and by their stable id (the id is in every epoll token, timer and lookup, so
    /// targets can come and go, as a reload will need, without renumbering the others).
    private let targets: [TargetRuntime]
    private let targetsByID: [Int: TargetRuntime]
    private let metrics: MetricsStore
    private let logger: Logger
    private let epoll: Epoll
    private var timers = DeadlineHeap<TimerTag>()
    private let commands = Mutex<[Command]>([])
    private let reportedTargets = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)
    private let started = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)
    private var running = true
    /// Lookups complete on resolver threads and come back as commands; `weak` because one may finish after stop.
    private lazy var resolver = HostResolver { [weak self] ticket, result in
        guard let self else { return }
        self.commands.withLock { $0.append(.lookupFinished(ticket: ticket, result)) }
        self.epoll.wake()
    }
    private var nextTicket: UInt64 = 0
    /// Connects in progress are bounded; keys are the slots' epoll tokens.
    private var admission: ConnectAdmission<UInt64>
    /// Slots admitted while handling an event; started by the loop afterwards, so a chain of connects that
    /// fail at once (a missing password file on every target) is a loop, not a recursion.
    private var pendingAdmissions: [UInt64] = []
    private var publishedConnects = (0, 0)
    private var pendingLookups: [UInt64: (id: Int, role: ConnectionRole)] = [:]

    /// - Parameters:
    ///   - seed: seeds each target's backoff and login-check jitter (target i uses seed + i); random by default.
    ///   - maxConcurrentConnects: how many connections (sessions and login checks) may be in the middle of being
    ///     established at once; the rest wait their turn (``ConnectAdmission``).
    public init(
        config: ValidatedConfig, metrics: MetricsStore, logger: Logger, seed: UInt64 = UInt64.random(in: 0...UInt64.max),
        maxConcurrentConnects: Int = 64
    ) throws(SystemError) {
        self.admission = ConnectAdmission(limit: maxConcurrentConnects)
        self.metrics = metrics
        self.logger = logger
        self.epoll = try Epoll()
        self.targets = config.targets.enumerated().map { index, target in
            TargetRuntime(id: index, config: target, seed: seed &+ UInt64(index))
        }
        self.targetsByID = Dictionary(uniqueKeysWithValues: targets.map { ($0.id, $0) })
        metrics.setTargets(config.targets)
    }

    /// True once every target has finished its first probe or first connection attempt.
    public var isReady: Bool { reportedTargets.load(ordering: .acquiring) >= targets.count }

    /// Starts the I/O thread. Call once.
    public func start() {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let thread = Thread { [self] in
            self.run()
            self.finished.signal()
        }
        thread.name = "pgconn-monitor"
        thread.start()
    }

    /// Closes every connection and stops the I/O thread; returns when it has (or after `timeout`).
    /// Idempotent: later calls return at once.
    public func stop(timeout: Duration = .seconds(2)) {
        guard started.load(ordering: .acquiring), !stopRequested.exchange(true, ordering: .acquiringAndReleasing) else {
            return
        }
        commands.withLock { $0.append(.stop) }
        epoll.wake()
        _ = finished.wait(timeout: .now() + .nanoseconds(Int(timeout.nanoseconds)))
    }

    // MARK: - The loop

    private func run() {
        let now = Self.monotonicNow()
        for target in targets {
            drive(target, target.session.start(now: now), now: now)
            driveLogin(target, target.login.start(now: now), now: now)
        }
        while running {
            let now = Self.monotonicNow()
            fireTimers(now: now)
            let events = epoll.wait(timeoutMilliseconds: waitTimeout(now: Self.monotonicNow()))
            let afterWait = Self.monotonicNow()
            for event in events {
                if event.token == Epoll.wakeToken {
                    runCommands(now: afterWait)
                } else {
                    dispatch(event, now: afterWait)
                }
                if !running { break }
            }
            startAdmitted()
            publishConnects()
        }
    }

    /// Writes the connect queue's size to the store when it changed (once per loop turn at most).
    private func publishConnects() {
        let current = (admission.inFlight.count, admission.waitingCount)
        guard current != publishedConnects else { return }
        publishedConnects = current
        metrics.recordConnects(inProgress: current.0, waiting: current.1)
    }

    private func waitTimeout(now: MonotonicInstant) -> Int32 {
        if !pendingAdmissions.isEmpty { return 0 }
        guard let earliest = timers.earliest else { return -1 }
        if earliest <= now { return 0 }
        // Round up: waking a millisecond late is fine, waking early just spins once more.
        let milliseconds = ((earliest - now).nanoseconds + 999_999) / 1_000_000
        return Int32(min(milliseconds, 60_000))
    }

    private func runCommands(now: MonotonicInstant) {
        let pending = commands.withLock { commands in
            defer { commands.removeAll() }
            return commands
        }
        for command in pending {
            switch command {
            case .stop:
                for target in targets {
                    drive(target, target.session.stop(), now: now)
                    driveLogin(target, target.login.stop(), now: now)
                }
                resolver.shutdown()
                running = false
            case .lookupFinished(let ticket, let result):
                lookupFinished(ticket: ticket, result, now: now)
            }
        }
    }

    private func fireTimers(now: MonotonicInstant) {
        while let entry = timers.popDue(now: now) {
            guard let target = targetsByID[entry.tag.id] else { continue }
            switch entry.tag.kind {
            case .session:
                guard target.scheduledSession == entry.deadline else { continue }
                target.scheduledSession = nil
                metrics.recordLoopLag(seconds: (now - entry.deadline).seconds)
                drive(target, target.session.timerFired(now: now), now: now)
            case .login:
                guard target.scheduledLogin == entry.deadline else { continue }
                target.scheduledLogin = nil
                driveLogin(target, target.login.timerFired(now: now), now: now)
            }
        }
    }

    private func reschedule(_ target: TargetRuntime) {
        let session = target.session.deadline
        if session != target.scheduledSession {
            target.scheduledSession = session
            if let session { timers.push(session, TimerTag(id: target.id, kind: .session)) }
        }
        let login = target.login.deadline
        if login != target.scheduledLogin {
            target.scheduledLogin = login
            if let login { timers.push(login, TimerTag(id: target.id, kind: .login)) }
        }
    }

    private func dispatch(_ event: Epoll.Event, now: MonotonicInstant) {
        guard let target = targetsByID[Int(event.token >> 1)] else { return }
        if event.token & 1 == 0 {
            sessionSocketReady(target, event, now: now)
        } else {
            loginSocketReady(target, now: now)
        }
    }

    // MARK: - Connections (shared by sessions and login checks)

    /// Opens the slot's connection when its turn comes (at once if fewer than the limit are connecting).
    private func open(_ slot: ConnectionSlot, of target: TargetRuntime, now: MonotonicInstant) {
        close(slot, of: target)
        let token = target.token(slot.role)
        if admission.request(token) {
            slot.admission = .holding
            begin(slot, of: target, now: now)
        } else {
            slot.admission = .waiting
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
    private func startAdmitted() {
        while running && !pendingAdmissions.isEmpty {
            let batch = pendingAdmissions
            pendingAdmissions = []
            let now = Self.monotonicNow()
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

    /// Starts connecting: resolves host names first (off this thread) when the DSN needs it.
    private func begin(_ slot: ConnectionSlot, of target: TargetRuntime, now: MonotonicInstant) {
        if let hosts = target.hostsNeedingLookup {
            nextTicket += 1
            slot.ticket = nextTicket
            pendingLookups[nextTicket] = (target.id, slot.role)
            resolver.resolve(hosts, ticket: nextTicket)
        } else {
            connect(slot, of: target, hostaddr: nil, now: now)
        }
    }

    /// A lookup finished; ignored when its slot was closed or reopened since (the ticket no longer matches).
    private func lookupFinished(ticket: UInt64, _ result: Result<[String], Failure>, now: MonotonicInstant) {
        guard let (id, role) = pendingLookups.removeValue(forKey: ticket), let target = targetsByID[id] else { return }
        let slot = target.slot(role)
        guard slot.ticket == ticket else { return }
        slot.ticket = nil
        switch result {
        case .success(let addresses):
            connect(slot, of: target, hostaddr: addresses.joined(separator: ","), now: now)
        case .failure(let failure):
            connectFailed(slot, of: target, failure, now: now)
        }
    }

    private func connect(_ slot: ConnectionSlot, of target: TargetRuntime, hostaddr: String?, now: MonotonicInstant) {
        let purpose: ConnectionParameters.Purpose = slot.role == .session ? .session : .loginCheck
        let started = ConnectionParameters.overrides(for: target.config, purpose: purpose).flatMap { overrides in
            PostgresConnection.start(
                dsn: target.config.dsn, overrides: overrides + (hostaddr.map { [("hostaddr", $0)] } ?? []))
        }
        switch started {
        case .failure(let failure):
            connectFailed(slot, of: target, failure, now: now)
        case .success(let connection):
            slot.connection = connection
            slot.connecting = true
            slot.socket = connection.socket
            epoll.add(connection.socket, .write, token: target.token(slot.role))
        }
    }

    private func connectFailed(_ slot: ConnectionSlot, of target: TargetRuntime, _ failure: Failure, now: MonotonicInstant) {
        switch slot.role {
        case .session: drive(target, target.session.connectFailed(failure, now: now), now: now)
        case .login: driveLogin(target, target.login.failed(failure, now: now), now: now)
        }
    }

    /// Closes the slot's connection (or forgets its pending lookup or its place in the queue). Idempotent.
    private func close(_ slot: ConnectionSlot, of target: TargetRuntime) {
        releaseAdmission(slot, of: target)
        slot.ticket = nil
        slot.query = nil
        slot.results = []
        guard let connection = slot.connection else { return }
        epoll.unwatch(slot.socket)
        connection.close()
        slot.connection = nil
        slot.socket = -1
    }

    /// Advances a connect in progress; returns the connection once it is ready.
    private func advanceConnect(_ slot: ConnectionSlot, of target: TargetRuntime, now: MonotonicInstant) -> Bool {
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
            slot.connecting = false
            releaseAdmission(slot, of: target)
            return true
        case .failed(let failure):
            connectFailed(slot, of: target, failure, now: now)
        }
        return false
    }

    // MARK: - Session

    /// Applies a session output: metrics and logs first, then the actions, which may feed more events.
    private func drive(_ target: TargetRuntime, _ output: SessionStateMachine.Output, now: MonotonicInstant) {
        if !output.observations.isEmpty { observe(target, output.observations) }
        for action in output.actions {
            switch action {
            case .openConnection:
                open(target.sessionSlot, of: target, now: now)
            case .sendFactsQuery:
                send(target, .facts, Self.factsQuery, now: now)
            case .sendProbe:
                send(target, .probe, Self.probeQuery(for: target.config), now: now)
            case .closeConnection:
                close(target.sessionSlot, of: target)
            }
        }
        reschedule(target)
    }

    private func send(_ target: TargetRuntime, _ kind: QueryKind, _ sql: String, now: MonotonicInstant) {
        let slot = target.sessionSlot
        guard let connection = slot.connection else { return }
        guard connection.sendQuery(sql) else {
            let failure = FailureClassifier.classify(sqlstate: nil, message: connection.errorMessage)
            drive(target, target.session.connectionLost(failure, now: now), now: now)
            return
        }
        slot.query = kind
        slot.results = []
        flushSession(target, now: now)
    }

    private func flushSession(_ target: TargetRuntime, now: MonotonicInstant) {
        let slot = target.sessionSlot
        guard let connection = slot.connection else { return }
        switch connection.flush() {
        case .success(let done):
            epoll.watch(slot.socket, done ? .read : [.read, .write], token: target.token(.session))
        case .failure(let failure):
            drive(target, target.session.connectionLost(failure, now: now), now: now)
        }
    }

    private func sessionSocketReady(_ target: TargetRuntime, _ event: Epoll.Event, now: MonotonicInstant) {
        let slot = target.sessionSlot
        guard let connection = slot.connection else { return }
        if slot.connecting {
            if advanceConnect(slot, of: target, now: now) {
                epoll.watch(slot.socket, .read, token: target.token(.session))
                drive(target, target.session.connected(now: now), now: now)
            }
            return
        }
        if event.writable && slot.query != nil {
            flushSession(target, now: now)
            guard slot.connection === connection else { return }
        }
        guard event.readable || event.hangup else { return }
        if let failure = connection.consumeInput() {
            drive(target, target.session.connectionLost(failure, now: now), now: now)
            return
        }
        guard let kind = slot.query else { return }  // idle: a notice or parameter status, nothing to do
        while !connection.isBusy {
            guard let result = connection.nextResult() else {
                let results = slot.results
                slot.query = nil
                slot.results = []
                finishQuery(target, kind, results, connection: connection, now: now)
                return
            }
            slot.results.append(result)
        }
    }

    private func finishQuery(
        _ target: TargetRuntime, _ kind: QueryKind, _ results: [PostgresConnection.QueryResult],
        connection: PostgresConnection, now: MonotonicInstant
    ) {
        switch kind {
        case .facts:
            if connection.isBad || results.contains(where: \.isFatal) {
                let failed = results.first { !$0.succeeded }
                let failure = failed.map { FailureClassifier.classify(sqlstate: $0.sqlstate, message: $0.message) }
                    ?? FailureClassifier.classify(sqlstate: nil, message: connection.errorMessage)
                drive(target, target.session.connectionLost(failure, now: now), now: now)
                return
            }
            // An ERROR here (a pooler's console, a missing function) only means the facts are unknown.
            var facts = ServerFacts(version: connection.parameterStatus("server_version"))
            if let row = results.first, row.succeeded {
                facts.inRecovery = row.firstValue.map { $0 == "t" }
                facts.startTime = row.secondValue.flatMap(Double.init)
            }
            drive(target, target.session.factsRead(facts.isEmpty ? nil : facts, now: now), now: now)
        case .probe:
            if let failed = results.first(where: { !$0.succeeded }) {
                var failure = FailureClassifier.classify(sqlstate: failed.sqlstate, message: failed.message)
                if connection.isBad || failed.isFatal {
                    drive(target, target.session.connectionLost(failure, now: now), now: now)
                } else {
                    // The session goes on, so a reason that would mean its end (PgBouncer's console answers an
                    // unknown command with 08P01) is, here, just a failed query.
                    if Self.sessionEndingReasons.contains(failure.reason) { failure.reason = .queryError }
                    let open = connection.isInTransaction
                    drive(target, target.session.probeFailed(failure, leftTransactionOpen: open, now: now), now: now)
                }
            } else {
                let inRecovery = target.config.expect == .any ? nil : results.last?.firstValue.map { $0 == "t" }
                drive(target, target.session.probeSucceeded(inRecovery: inRecovery, now: now), now: now)
            }
        }
    }

    // MARK: - Login checks

    private func driveLogin(_ target: TargetRuntime, _ output: LoginCheckStateMachine.Output, now: MonotonicInstant) {
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
    }

    private func loginSocketReady(_ target: TargetRuntime, now: MonotonicInstant) {
        let slot = target.loginSlot
        guard slot.connection != nil, slot.connecting else { return }
        if advanceConnect(slot, of: target, now: now) {
            driveLogin(target, target.login.succeeded(now: now), now: now)
        }
    }

    // MARK: - Observations

    private func observe(_ target: TargetRuntime, _ observations: [SessionStateMachine.Observation]) {
        let wallClock = Self.wallClockNow()
        let restarted = metrics.update(target.config.name) { series in
            for observation in observations { series.apply(observation, wallClock: wallClock) }
            series.sync(with: target.session)
            return series.takeRestartDetected()
        }
        if restarted == true {
            logger.warning("server restarted", metadata: ["target": "\(target.config.name)"])
        }
        for observation in observations {
            switch observation {
            case .stateChanged(let from, let to, let failure):
                var metadata: Logger.Metadata = [
                    "target": "\(target.config.name)", "from": "\(from?.rawValue ?? "start")", "to": "\(to.rawValue)",
                ]
                Self.describe(failure, into: &metadata)
                logger.log(level: to == .backoff ? .warning : .info, "session state changed", metadata: metadata)
            case .healthChanged(let up, let failure):
                var metadata: Logger.Metadata = ["target": "\(target.config.name)", "up": "\(up ? 1 : 0)"]
                Self.describe(failure, into: &metadata)
                logger.log(level: up ? .info : .warning, up ? "probe succeeding" : "probe failing", metadata: metadata)
            case .probeSucceeded, .probeFailed, .connectionFailed:
                if !target.reported {
                    target.reported = true
                    reportedTargets.add(1, ordering: .releasing)
                }
            default:
                break
            }
        }
    }

    private func observeLogin(_ target: TargetRuntime, _ observations: [LoginCheckStateMachine.Observation]) {
        metrics.update(target.config.name) { series in
            for observation in observations { series.apply(observation) }
        }
        for case .healthChanged(let up, let failure) in observations {
            var metadata: Logger.Metadata = ["target": "\(target.config.name)", "login_up": "\(up ? 1 : 0)"]
            Self.describe(failure, into: &metadata)
            logger.log(level: up ? .info : .warning, up ? "login check succeeding" : "login check failing", metadata: metadata)
        }
    }

    private static func describe(_ failure: Failure?, into metadata: inout Logger.Metadata) {
        guard let failure else { return }
        metadata["reason"] = "\(failure.reason.rawValue)"
        if let sqlstate = failure.sqlstate { metadata["sqlstate"] = "\(sqlstate)" }
        metadata["message"] = "\(failure.message)"
    }

    // MARK: - Queries and clocks

    /// Read once per connection; poolers that cannot answer it just leave the facts out.
    static let factsQuery =
        "SELECT pg_catalog.pg_is_in_recovery(), extract(epoch FROM pg_catalog.pg_postmaster_start_time())::float8"

    /// The configured query, plus the role check when the target expects one.
    static func probeQuery(for config: TargetConfig) -> String {
        config.expect == .any ? config.query : config.query + ";\nSELECT pg_catalog.pg_is_in_recovery()"
    }

    /// Reasons that describe the end of a session; an ERROR (not FATAL) with one of them on a connection that
    /// goes on is counted as a query error.
    static let sessionEndingReasons: Set<FailureReason> = [
        .adminShutdown, .crashShutdown, .idleTimeout, .connectionLost, .network,
    ]

    static func monotonicNow() -> MonotonicInstant {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return MonotonicInstant(nanoseconds: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }

    static func wallClockNow() -> Double {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
    }
}

extension ServerFacts {
    var isEmpty: Bool { version == nil && inRecovery == nil && startTime == nil }
}
