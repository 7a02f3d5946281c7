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
/// their actions and feeds them events, and writes their observations into the ``MetricsStore``. No libpq call
/// here blocks (DNS aside, see the README), so one black-holed host never delays another target, and HTTP
/// threads never wait on this one: they read the store.
///
/// `@unchecked Sendable`: every mutable property is touched only on the I/O thread, except `commands`
/// (a mutex) and `reportedTargets` (an atomic), which are the only ways in from other threads.
public final class Monitor: @unchecked Sendable {
    enum Command {
        case stop
    }

    private let targets: [TargetRuntime]
    private let metrics: MetricsStore
    private let logger: Logger
    private let epoll: Epoll
    private var timers = DeadlineHeap<TimerTag>()
    private let commands = Mutex<[Command]>([])
    private let reportedTargets = Atomic<Int>(0)
    private let finished = DispatchSemaphore(value: 0)
    private let started = Atomic<Bool>(false)
    private var running = true

    /// - Parameter seed: seeds each target's backoff jitter (target i uses seed + i); random by default.
    public init(
        config: ValidatedConfig, metrics: MetricsStore, logger: Logger, seed: UInt64 = UInt64.random(in: 0...UInt64.max)
    ) throws(SystemError) {
        self.metrics = metrics
        self.logger = logger
        self.epoll = try Epoll()
        self.targets = config.targets.enumerated().map { index, target in
            TargetRuntime(index: index, config: target, seed: seed &+ UInt64(index))
        }
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
    public func stop(timeout: Duration = .seconds(2)) {
        guard started.load(ordering: .acquiring) else { return }
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
        }
    }

    private func waitTimeout(now: MonotonicInstant) -> Int32 {
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
                running = false
            }
        }
    }

    private func fireTimers(now: MonotonicInstant) {
        while let entry = timers.popDue(now: now) {
            let target = targets[entry.tag.index]
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
            if let session { timers.push(session, TimerTag(index: target.index, kind: .session)) }
        }
        let login = target.login.deadline
        if login != target.scheduledLogin {
            target.scheduledLogin = login
            if let login { timers.push(login, TimerTag(index: target.index, kind: .login)) }
        }
    }

    private func dispatch(_ event: Epoll.Event, now: MonotonicInstant) {
        let index = Int(event.token >> 1)
        guard index < targets.count else { return }
        let target = targets[index]
        if event.token & 1 == 0 {
            sessionSocketReady(target, event, now: now)
        } else {
            loginSocketReady(target, now: now)
        }
    }

    // MARK: - Session

    /// Applies a session output: metrics and logs first, then the actions, which may feed more events.
    private func drive(_ target: TargetRuntime, _ output: SessionStateMachine.Output, now: MonotonicInstant) {
        if !output.observations.isEmpty { observe(target, output.observations) }
        for action in output.actions {
            switch action {
            case .openConnection:
                openSession(target, now: now)
            case .sendFactsQuery:
                send(target, .facts, Self.factsQuery, now: now)
            case .sendProbe:
                send(target, .probe, Self.probeQuery(for: target.config), now: now)
            case .closeConnection:
                closeSession(target)
            }
        }
        reschedule(target)
    }

    private func openSession(_ target: TargetRuntime, now: MonotonicInstant) {
        closeSession(target)
        let started = ConnectionParameters.overrides(for: target.config, purpose: .session).flatMap {
            PostgresConnection.start(dsn: target.config.dsn, overrides: $0)
        }
        switch started {
        case .failure(let failure):
            drive(target, target.session.connectFailed(failure, now: now), now: now)
        case .success(let connection):
            target.sessionConnection = connection
            target.sessionConnecting = true
            target.sessionSocket = connection.socket
            epoll.add(connection.socket, .write, token: target.sessionToken)
        }
    }

    private func closeSession(_ target: TargetRuntime) {
        guard let connection = target.sessionConnection else { return }
        epoll.unwatch(target.sessionSocket)
        connection.close()
        target.sessionConnection = nil
        target.sessionSocket = -1
        target.sessionQuery = nil
        target.sessionResults = []
    }

    private func send(_ target: TargetRuntime, _ kind: QueryKind, _ sql: String, now: MonotonicInstant) {
        guard let connection = target.sessionConnection else { return }
        guard connection.sendQuery(sql) else {
            let failure = FailureClassifier.classify(sqlstate: nil, message: connection.errorMessage)
            drive(target, target.session.connectionLost(failure, now: now), now: now)
            return
        }
        target.sessionQuery = kind
        target.sessionResults = []
        flushSession(target, now: now)
    }

    private func flushSession(_ target: TargetRuntime, now: MonotonicInstant) {
        guard let connection = target.sessionConnection else { return }
        switch connection.flush() {
        case .success(let done):
            epoll.watch(target.sessionSocket, done ? .read : [.read, .write], token: target.sessionToken)
        case .failure(let failure):
            drive(target, target.session.connectionLost(failure, now: now), now: now)
        }
    }

    private func sessionSocketReady(_ target: TargetRuntime, _ event: Epoll.Event, now: MonotonicInstant) {
        guard let connection = target.sessionConnection else { return }
        if target.sessionConnecting {
            let status = connection.poll()
            followSocket(of: connection, registered: &target.sessionSocket, token: target.sessionToken)
            switch status {
            case .wantRead:
                epoll.watch(target.sessionSocket, .read, token: target.sessionToken)
            case .wantWrite:
                epoll.watch(target.sessionSocket, .write, token: target.sessionToken)
            case .ready:
                target.sessionConnecting = false
                epoll.watch(target.sessionSocket, .read, token: target.sessionToken)
                drive(target, target.session.connected(now: now), now: now)
            case .failed(let failure):
                drive(target, target.session.connectFailed(failure, now: now), now: now)
            }
            return
        }
        if event.writable && target.sessionQuery != nil {
            flushSession(target, now: now)
            guard target.sessionConnection === connection else { return }
        }
        guard event.readable || event.hangup else { return }
        if let failure = connection.consumeInput() {
            drive(target, target.session.connectionLost(failure, now: now), now: now)
            return
        }
        guard let kind = target.sessionQuery else { return }  // idle: a notice or parameter status, nothing to do
        while !connection.isBusy {
            guard let result = connection.nextResult() else {
                target.sessionQuery = nil
                let results = target.sessionResults
                target.sessionResults = []
                finishQuery(target, kind, results, connection: connection, now: now)
                return
            }
            target.sessionResults.append(result)
        }
    }

    private func finishQuery(
        _ target: TargetRuntime, _ kind: QueryKind, _ results: [PostgresConnection.QueryResult],
        connection: PostgresConnection, now: MonotonicInstant
    ) {
        switch kind {
        case .facts:
            var facts = ServerFacts(version: connection.parameterStatus("server_version"))
            if let row = results.first, row.succeeded {
                facts.inRecovery = row.firstValue.map { $0 == "t" }
                facts.startTime = row.secondValue.flatMap(Double.init)
            }
            drive(target, target.session.factsRead(facts.isEmpty ? nil : facts, now: now), now: now)
        case .probe:
            if let failed = results.first(where: { !$0.succeeded }) {
                let failure = FailureClassifier.classify(sqlstate: failed.sqlstate, message: failed.message)
                if connection.isBad || Self.sessionEndingReasons.contains(failure.reason) {
                    drive(target, target.session.connectionLost(failure, now: now), now: now)
                } else {
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
                openLogin(target, now: now)
            case .closeConnection:
                closeLogin(target)
            }
        }
        reschedule(target)
    }

    private func openLogin(_ target: TargetRuntime, now: MonotonicInstant) {
        closeLogin(target)
        let started = ConnectionParameters.overrides(for: target.config, purpose: .loginCheck).flatMap {
            PostgresConnection.start(dsn: target.config.dsn, overrides: $0)
        }
        switch started {
        case .failure(let failure):
            driveLogin(target, target.login.failed(failure, now: now), now: now)
        case .success(let connection):
            target.loginConnection = connection
            target.loginSocket = connection.socket
            epoll.add(connection.socket, .write, token: target.loginToken)
        }
    }

    private func closeLogin(_ target: TargetRuntime) {
        guard let connection = target.loginConnection else { return }
        epoll.unwatch(target.loginSocket)
        connection.close()
        target.loginConnection = nil
        target.loginSocket = -1
    }

    private func loginSocketReady(_ target: TargetRuntime, now: MonotonicInstant) {
        guard let connection = target.loginConnection else { return }
        let status = connection.poll()
        followSocket(of: connection, registered: &target.loginSocket, token: target.loginToken)
        switch status {
        case .wantRead:
            epoll.watch(target.loginSocket, .read, token: target.loginToken)
        case .wantWrite:
            epoll.watch(target.loginSocket, .write, token: target.loginToken)
        case .ready:
            driveLogin(target, target.login.succeeded(now: now), now: now)
        case .failed(let failure):
            driveLogin(target, target.login.failed(failure, now: now), now: now)
        }
    }

    /// libpq may switch sockets while connecting (the next host or address): move the registration along.
    private func followSocket(of connection: PostgresConnection, registered: inout Int32, token: UInt64) {
        let current = connection.socket
        guard current != registered else { return }
        epoll.unwatch(registered)
        registered = current
        if current >= 0 { epoll.add(current, .write, token: token) }
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
            case .healthChanged(let up, let failure) where failure?.reason != nil || up:
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

    /// A failed probe with one of these reasons means the server ended the session, even if libpq has not
    /// read the end of the stream yet.
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

/// Which timer of which target a heap entry belongs to.
struct TimerTag: Sendable {
    enum Kind: Sendable { case session, login }
    var index: Int
    var kind: Kind
}

enum QueryKind {
    case facts
    case probe
}

/// One target's machines and connections; touched only on the monitor's I/O thread.
final class TargetRuntime {
    let index: Int
    let config: TargetConfig
    var session: SessionStateMachine
    var login: LoginCheckStateMachine
    var sessionConnection: PostgresConnection?
    var sessionConnecting = false
    var sessionSocket: Int32 = -1
    var sessionQuery: QueryKind?
    var sessionResults: [PostgresConnection.QueryResult] = []
    var loginConnection: PostgresConnection?
    var loginSocket: Int32 = -1
    var scheduledSession: MonotonicInstant?
    var scheduledLogin: MonotonicInstant?
    /// Whether this target has counted toward readiness.
    var reported = false

    init(index: Int, config: TargetConfig, seed: UInt64) {
        self.index = index
        self.config = config
        self.session = SessionStateMachine(config: config, seed: seed)
        self.login = LoginCheckStateMachine(interval: config.loginInterval, timeout: config.connectTimeout)
    }

    /// epoll tokens: the index shifted left, the low bit telling session (0) from login check (1).
    var sessionToken: UInt64 { UInt64(index) << 1 }
    var loginToken: UInt64 { UInt64(index) << 1 | 1 }
}

extension ServerFacts {
    var isEmpty: Bool { version == nil && inRecovery == nil && startTime == nil }
}
