import Glibc
import Logging
import PGConnCore
import PGConnSync
import Synchronization

/// The I/O thread: epoll for sockets, a deadline heap for timers, and the per-target drivers.
///
/// Each target has a ``SessionStateMachine`` and a ``LoginCheckStateMachine``; the loop only carries out their
/// actions and feeds them events (the drivers, in the `MonitorLoop+*.swift` files: connections, session,
/// login checks, observations). Nothing here blocks: host names, password files and cancel requests go to
/// ``WorkerPool``s, whose answers come back as ``Command``s through one wake-up.
///
/// `@unchecked Sendable`: every mutable property is touched only on the I/O thread, except `commands`
/// (a mutex) and `published` (atomics), the only ways in from other threads.
final class MonitorLoop: @unchecked Sendable {
    enum Command {
        case stop
        case reload(ValidatedConfig, ReloadCompletion)
        case passwordRead(ticket: UInt64, Result<String?, Failure>)
        case lookupFinished(ticket: UInt64, Result<ResolvedHosts, Failure>)
        case cancelSent(id: Int)
        case credentialsRead(id: Int, Result<String?, Failure>)
        case probe(ProbeOrder, ProbeCompletion)
        case connectStep(id: Int, role: ConnectionRole, ticket: UInt64, ConnectPollStatus)
        case endpointChecked(Endpoint, accepts: Bool)
    }

    /// Targets in config order, and by their stable id (the id is in every epoll token, timer and lookup, so
    /// targets can come and go, as a reload will need, without renumbering the others).
    var targets: [TargetRuntime]
    var targetsByID: [Int: TargetRuntime]
    /// The next id for a target that a reload adds; ids are never reused.
    var nextTargetID: Int
    let seed: UInt64
    /// Targets that have not finished a first probe or connection attempt (for readiness).
    var unreported: Int
    let metrics: MetricsStore
    let logger: Logger
    let environment: MonitorEnvironment
    let epoll: Epoll
    let published: LoopPublication
    var timers = DeadlineHeap<TimerTag>()
    private let commands = Lock<[Command]>([])
    var running = true

    /// One pool per kind of blocking work, so one kind stuck (a silent DNS server) never delays another.
    let lookups = WorkerPool(name: "pgconn-dns", width: 4)
    let files = WorkerPool(name: "pgconn-files", width: 1)
    let cancels = WorkerPool(name: "pgconn-cancel", width: 2)
    /// Connect steps (``ConnectStep``): CPU work (SCRAM, TLS), one thread per core so a login storm uses the
    /// machine and the I/O thread stays free.
    let connects = WorkerPool(name: "pgconn-connect", width: MonitorLoop.connectWorkers)
    /// On-demand probes resolve their names apart, so probes of names that hang DNS never delay the targets'.
    let probeLookups = WorkerPool(name: "pgconn-probe-dns", width: 2)
    /// Port checks for sessions backing off after a refused connect (``ReachabilityWatch``); each is bounded.
    let reachabilityChecks = WorkerPool(name: "pgconn-reach", width: 1)
    var reachability = ReachabilityWatch()
    var nextTicket: UInt64 = 0
    /// Lookups submitted and not answered, by ticket: which target asked.
    var pendingLookups: [UInt64: Int] = [:]
    /// Password reads submitted and not answered, by ticket.
    var pendingPasswords: [UInt64: (id: Int, role: ConnectionRole)] = [:]

    /// Connects in progress are bounded; keys are the slots' epoll tokens.
    var admission: ConnectAdmission<UInt64>
    /// Slots admitted while handling an event; started by the loop afterwards, so a chain of connects that
    /// fail at once (a missing password file on every target) is a loop, not a recursion.
    var pendingAdmissions: [UInt64] = []
    private var publishedGauges = LoopGauges()
    /// On-demand probes in progress, by the id of their runtime (from the targets' id space, never reused).
    var probeRuns: [Int: ProbeRun] = [:]
    /// The run in progress for a probe key: one connection per probed target at a time, later requests join it.
    var probeRunsByKey: [String: Int] = [:]
    /// Probed targets whose credentials just failed, not to be tried again for a while.
    var probeCredentialHold = ProbeCredentialHold()

    init(
        config: ValidatedConfig, metrics: MetricsStore, logger: Logger, environment: MonitorEnvironment, seed: UInt64,
        maxConcurrentConnects: Int
    ) throws(SystemError) {
        self.admission = ConnectAdmission(limit: maxConcurrentConnects)
        self.metrics = metrics
        self.logger = logger
        self.environment = environment
        self.epoll = try Epoll()
        self.targets = config.targets.enumerated().map { index, target in
            TargetRuntime(id: index, config: target, seed: seed &+ UInt64(index))
        }
        self.targetsByID = Dictionary(uniqueKeysWithValues: targets.map { ($0.id, $0) })
        self.nextTargetID = targets.count
        self.seed = seed
        self.unreported = targets.count
        self.published = LoopPublication(ready: targets.isEmpty)
        metrics.setTargets(targets.map { ($0.id, $0.config) })
    }

    /// A loop that never ran (a monitor that was never started) still ends its worker threads.
    deinit {
        lookups.shutdown()
        probeLookups.shutdown()
        files.shutdown()
        connects.shutdown()
        reachabilityChecks.shutdown()
        cancels.shutdown(dropQueued: false)
    }

    /// After the loop has run its `.stop`: waits, at most `timeout` in all, for the worker threads to end
    /// (``WorkerPool/join(timeout:waitingForJobs:)``). Connect steps are waited for even while they run: they
    /// compute and never block (host names are resolved before), and a SCRAM step still in OpenSSL when the
    /// process exits crashes in it, as `OPENSSL_cleanup` (at exit) frees what the step is using. So are cancel
    /// requests, which the stop queued for the queries it left running: a process that exits first leaves them
    /// running on the server. Lookups, file reads and port checks are waited for only when idle.
    func joinWorkers(timeout: Duration) {
        let start = MonotonicInstant.now()
        for pool in [connects, cancels] {
            pool.join(timeout: timeout - (MonotonicInstant.now() - start), waitingForJobs: true)
        }
        for pool in [lookups, probeLookups, files, reachabilityChecks] {
            pool.join(timeout: timeout - (MonotonicInstant.now() - start))
        }
    }

    /// One connect worker per core, at least 2 and at most 8.
    static var connectWorkers: Int { min(8, max(2, sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// A target's runtime, or an on-demand probe's, by id.
    func runtime(_ id: Int) -> TargetRuntime? {
        targetsByID[id] ?? probeRuns[id]?.runtime
    }

    /// Queues a command for the loop and wakes it. Safe from any thread.
    func send(_ command: Command) {
        commands.withLock { $0.append(command) }
        epoll.wake()
    }

    // MARK: - The loop

    func run() {
        let now = MonotonicInstant.now()
        for target in targets {
            drive(target, target.session.start(now: now), now: now)
            driveLogin(target, target.login.start(now: now), now: now)
        }
        while running {
            fireTimers(now: MonotonicInstant.now())
            startAdmitted()
            publishGauges()
            let beforeWait = MonotonicInstant.now()
            published.setEarliestDeadline(pendingAdmissions.isEmpty ? timers.earliest : beforeWait)
            let events = epoll.wait(timeoutMilliseconds: waitTimeout(now: beforeWait))
            let afterWait = MonotonicInstant.now()
            for event in events {
                if event.token == Epoll.wakeToken {
                    runCommands(now: afterWait)
                } else {
                    dispatch(event, now: afterWait)
                }
                if !running { break }
            }
        }
        published.setEarliestDeadline(nil)
    }

    /// Writes the queue gauges to the store when they changed (once per loop turn at most).
    private func publishGauges() {
        let current = LoopGauges(
            connectsInProgress: admission.inFlight.count, connectsWaiting: admission.waitingCount,
            lookupsPending: pendingLookups.count)
        guard current != publishedGauges else { return }
        publishedGauges = current
        metrics.recordConnects(inProgress: current.connectsInProgress, waiting: current.connectsWaiting)
        metrics.recordLookupsPending(current.lookupsPending)
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
                stopProbes(now: now)
                lookups.shutdown()
                probeLookups.shutdown()
                files.shutdown()
                connects.shutdown()  // every slot is closed: no step left to run
                reachabilityChecks.shutdown()
                cancels.shutdown(dropQueued: false)  // the cancels of queries the stop left running
                running = false
            case .reload(let config, let completion):
                completion.finish(reload(config, now: now))
            case .passwordRead(let ticket, let result):
                passwordRead(ticket: ticket, result, now: now)
            case .lookupFinished(let ticket, let result):
                lookupFinished(ticket: ticket, result, now: now)
            case .cancelSent(let id):
                runtime(id)?.cancelInFlight = false
            case .credentialsRead(let id, let result):
                guard let target = targetsByID[id] else { continue }
                credentialsRead(target, result, now: now)
            case .probe(let order, let completion):
                startProbe(order, completion, now: now)
            case .connectStep(let id, let role, let ticket, let status):
                connectStepFinished(id: id, role: role, ticket: ticket, status, now: now)
            case .endpointChecked(let endpoint, let accepts):
                endpointChecked(endpoint, accepts: accepts, now: now)
            }
        }
    }

    private func fireTimers(now: MonotonicInstant) {
        while let entry = timers.popDue(now: now) {
            if entry.tag.kind == .probe {
                if let run = probeRuns[entry.tag.id] { probeDeadlinePassed(run, now: now) }
                continue
            }
            if entry.tag.kind == .reachability {
                reachabilityTimerFired(at: entry.deadline, now: now)
                continue
            }
            guard let target = targetsByID[entry.tag.id] else { continue }
            switch entry.tag.kind {
            case .session:
                guard target.scheduledSession == entry.deadline else { continue }
                target.scheduledSession = nil
                metrics.recordLoopLag(seconds: (now - entry.deadline).seconds)
                if target.sessionSlot.stage == .resolving {
                    // The connect deadline passed while the name was still being looked up.
                    drive(target, target.session.connectFailed(Self.lookupTimedOut(target), now: now), now: now)
                } else {
                    readBeforeTimeout(target, now: now)
                    drive(target, target.session.timerFired(now: now), now: now)
                }
            case .login:
                guard target.scheduledLogin == entry.deadline else { continue }
                target.scheduledLogin = nil
                if target.loginSlot.stage == .resolving {
                    driveLogin(target, target.login.failed(Self.lookupTimedOut(target), now: now), now: now)
                } else {
                    driveLogin(target, target.login.timerFired(now: now), now: now)
                }
            case .credentials:
                // Stays set until the read is answered, so only one check is in flight.
                guard target.scheduledCredentialCheck == entry.deadline else { continue }
                checkCredentials(target)
            case .probe, .reachability:
                break  // handled above
            }
        }
    }

    /// A reply may be waiting in the socket of a query whose timeout is due: epoll hands out at most 64 ready
    /// sockets a turn, and timers go first, so under a storm of thousands the reply could be read after its
    /// timer and the probe fail as a false `timeout`. What has arrived is read first; a completed reply moves the
    /// machine on, and its timer finds its deadline gone.
    private func readBeforeTimeout(_ target: TargetRuntime, now: MonotonicInstant) {
        let slot = target.sessionSlot
        guard slot.stage == .established, slot.query != nil, slot.connection != nil else { return }
        let event = Epoll.Event(token: target.token(.session), readable: true, writable: false, hangup: false)
        sessionSocketReady(target, event, now: now)
    }

    static func lookupTimedOut(_ target: TargetRuntime) -> Failure {
        Failure(
            reason: .dns,
            message: "no answer from DNS within connect_timeout \(target.config.connectTimeout.prometheusString)")
    }

    /// Keeps the heap in step with the machines' deadlines; stale heap entries are skipped when they pop.
    func reschedule(_ target: TargetRuntime) {
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
        let (id, role) = TargetRuntime.decode(event.token)
        switch role {
        case .session:
            if let target = targetsByID[id] { sessionSocketReady(target, event, now: now) }
        case .login:
            if let target = targetsByID[id] { loginSocketReady(target, now: now) }
        case .probe:
            if let run = probeRuns[id] { probeSocketReady(run, event, now: now) }
        }
    }

    func newTicket() -> UInt64 {
        nextTicket += 1
        return nextTicket
    }
}

/// The loop's queue sizes, published when they change.
struct LoopGauges: Equatable {
    var connectsInProgress = 0
    var connectsWaiting = 0
    var lookupsPending = 0
}
