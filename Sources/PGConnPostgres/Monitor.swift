import CLinux
import Foundation
import Glibc
public import Logging
public import PGConnCore
import PGConnSync
import Synchronization

/// Watches every target from one I/O thread: the thread-safe handle that the rest of the process holds.
///
/// Everything that happens on the I/O thread is ``MonitorLoop``'s: epoll for sockets, a deadline heap for
/// timers, libpq's non-blocking API for connects and queries. This handle only starts and stops that thread
/// and answers what other threads may ask (readiness, how late the loop is) from atomics the loop publishes.
public final class Monitor: Sendable {
    private let loop: MonitorLoop
    private let started = Atomic<Bool>(false)
    private let stopRequested = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)
    /// The I/O thread, once started.
    private let thread = Lock<JoinableThread?>(nil)
    private let metrics: MetricsStore
    /// On-demand probes asked for and not answered yet, at most ``maxConcurrentProbes``.
    private let probesInFlight = Atomic<Int>(0)
    public let maxConcurrentProbes: Int

    /// - Parameters:
    ///   - seed: seeds each target's backoff and login-check jitter (target i uses seed + i); random by default.
    ///   - maxConcurrentConnects: how many connections (sessions, login checks, on-demand probes) may be in the
    ///     middle of being established at once; the rest wait their turn (``ConnectAdmission``).
    ///   - maxConcurrentProbes: how many on-demand probes may be asked for at once (``probe(_:completion:)``).
    public convenience init(
        config: ValidatedConfig, metrics: MetricsStore, logger: Logger,
        seed: UInt64 = UInt64.random(in: 0...UInt64.max),
        maxConcurrentConnects: Int = 64, maxConcurrentProbes: Int = 32
    ) throws(SystemError) {
        try self.init(
            config: config, metrics: metrics, logger: logger, environment: .live, seed: seed,
            maxConcurrentConnects: maxConcurrentConnects, maxConcurrentProbes: maxConcurrentProbes)
    }

    /// With the blocking work and the connections injected (tests use scripted fakes).
    package init(
        config: ValidatedConfig, metrics: MetricsStore, logger: Logger, environment: MonitorEnvironment, seed: UInt64,
        maxConcurrentConnects: Int = 64, maxConcurrentProbes: Int = 32
    ) throws(SystemError) {
        self.metrics = metrics
        self.maxConcurrentProbes = max(1, maxConcurrentProbes)
        loop = try MonitorLoop(
            config: config, metrics: metrics, logger: logger, environment: environment, seed: seed,
            maxConcurrentConnects: maxConcurrentConnects)
    }

    /// True once every target has finished its first probe or first connection attempt.
    public var isReady: Bool { loop.published.isReady }

    /// How overdue the loop's earliest timer is right now (zero when the loop keeps up): unlike the lag of timers
    /// that fired, this grows while the loop is stalled, so a scrape during a stall sees it.
    public var overdue: Duration { loop.published.overdue(now: MonotonicInstant.now()) }

    /// Applies a reloaded config on the loop and waits for it (at most `timeout`): targets that stay keep their
    /// session and counters, changed ones take their new settings (reconnecting only if the connection
    /// changed), removed ones close, new ones start. `nil` if the loop did not answer in time (or is stopped).
    public func reload(_ config: ValidatedConfig, timeout: Duration = .seconds(5)) -> ReloadSummary? {
        guard started.load(ordering: .acquiring), !stopRequested.load(ordering: .acquiring) else { return nil }
        let completion = ReloadCompletion()
        loop.send(.reload(config, completion))
        return completion.wait(timeout: timeout)
    }

    /// Runs one on-demand probe on the loop (no thread waits for it) and calls `completion` once with its result,
    /// on the I/O thread (or at once if the monitor is stopped): keep it short. Returns false, without probing,
    /// when ``maxConcurrentProbes`` are in progress (counted in `pgconn_exporter_probes_rejected_total`).
    public func probe(_ order: ProbeOrder, completion: @escaping @Sendable (ProbeResult) -> Void) -> Bool {
        let admitted = probesInFlight.wrappingAdd(1, ordering: .acquiringAndReleasing).newValue <= maxConcurrentProbes
        guard admitted else {
            probesInFlight.wrappingSubtract(1, ordering: .acquiringAndReleasing)
            metrics.recordProbeRejected()
            return false
        }
        metrics.recordProbe(started: true)
        let finish = ProbeCompletion { [self] result in
            probesInFlight.wrappingSubtract(1, ordering: .acquiringAndReleasing)
            metrics.recordProbe(started: false)
            completion(result)
        }
        guard !stopRequested.load(ordering: .acquiring) else {
            finish.finish(.failed(Failure(reason: .other, message: "the exporter is shutting down")))
            return true
        }
        loop.send(.probe(order, finish))
        return true
    }

    /// Starts the I/O thread. Call once.
    public func start() {
        guard !started.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let ioThread = JoinableThread(name: "pgconn-monitor") { [loop, finished] in
            loop.run()
            finished.signal()
        }
        thread.withLock { $0 = ioThread }
    }

    /// Closes every connection and stops the I/O thread; returns when it has (or after `timeout`), and the
    /// I/O thread and the workers have ended (``JoinableThread``: a process exiting next cuts no thread's end
    /// short, nor a connect step or a cancel request). Lookups, file reads and port checks still running (a
    /// lookup a silent DNS server holds) are not waited for.
    /// Idempotent: later calls return at once.
    public func stop(timeout: Duration = .seconds(2)) {
        guard started.load(ordering: .acquiring), !stopRequested.exchange(true, ordering: .acquiringAndReleasing) else {
            return
        }
        let start = MonotonicInstant.now()
        loop.send(.stop)
        guard finished.wait(timeout: .now() + .nanoseconds(Int(timeout.nanoseconds))) == .success else {
            thread.withLock { $0 }?.detach()
            return
        }
        thread.withLock { $0 }?.join(timeout: timeout - (MonotonicInstant.now() - start))
        loop.joinWorkers(timeout: timeout - (MonotonicInstant.now() - start))
    }
}

/// What the loop publishes for other threads: lock-free, written by the loop, read by scrapes and readiness.
final class LoopPublication: Sendable {
    private let ready: Atomic<Bool>
    /// The earliest timer's deadline in monotonic nanoseconds; `Int64.max` when none is due.
    private let earliestDeadline = Atomic<Int64>(.max)

    init(ready: Bool) { self.ready = Atomic(ready) }

    var isReady: Bool { ready.load(ordering: .acquiring) }

    func setReady(_ value: Bool) { ready.store(value, ordering: .releasing) }

    func setEarliestDeadline(_ deadline: MonotonicInstant?) {
        earliestDeadline.store(deadline?.nanoseconds ?? .max, ordering: .relaxed)
    }

    func overdue(now: MonotonicInstant) -> Duration {
        let deadline = earliestDeadline.load(ordering: .relaxed)
        guard deadline != .max, now.nanoseconds > deadline else { return .zero }
        return .nanoseconds(now.nanoseconds - deadline)
    }
}

extension MonotonicInstant {
    /// `CLOCK_MONOTONIC` now: the clock the monitor stamps observations with, for staleness at scrape time.
    public static func now() -> MonotonicInstant {
        var spec = timespec()
        clock_gettime(CLOCK_MONOTONIC, &spec)
        return MonotonicInstant(nanoseconds: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
    }
}
