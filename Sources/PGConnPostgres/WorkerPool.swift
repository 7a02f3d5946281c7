import CLinux
import Dispatch
import Foundation
import PGConnCore
import PGConnSync
import Synchronization

/// A few threads for the blocking calls the I/O thread must never make (DNS, file reads, `PQcancel`).
///
/// The loop submits a job with a ticket; a job whose ticket was withdrawn before a thread picked it up is
/// dropped without running, so a backlog behind a hung call (a silent DNS server) does not turn into a pile of
/// stale work. Each kind of work has a pool of its own, so hung lookups never delay a password read or a cancel.
/// Results go back to the loop through the job's own closure (a loop command).
///
/// Written on threads of its own rather than `OperationQueue`: with corelibs Foundation, an `OperationQueue`
/// whose operations block ran them one at a time here, whatever `maxConcurrentOperationCount` said, so one hung
/// `getaddrinfo` held up every other lookup.
final class WorkerPool: Sendable {
    private struct State {
        var jobs: [(ticket: UInt64, job: @Sendable () -> Void)] = []
        var head = 0
        var live: Set<UInt64> = []
        var stopping = false
        /// Which threads are running a job (by index), for ``join(timeout:waitingForJobs:)``.
        var busy: Set<Int> = []
    }

    private let state = Lock(State())
    private let available = DispatchSemaphore(value: 0)
    private let width: Int
    private let threads = Lock<[JoinableThread]>([])

    init(name: String, width: Int) {
        self.width = width
        for index in 0..<width {
            let threadName = "\(name)-\(index)"
            // Linux keeps 15 bytes of a thread's name (`top -H`, /proc/PID/task/*/comm): drop the prefix then.
            let short = threadName.utf8.count > 15 ? String(threadName.dropFirst("pgconn-".count)) : threadName
            let thread = JoinableThread(name: short) { [self] in work(index) }
            threads.withLock { $0.append(thread) }
        }
    }

    /// Runs `job` on a worker unless `ticket` is withdrawn before it starts.
    func submit(ticket: UInt64, _ job: @escaping @Sendable () -> Void) {
        let accepted = state.withLock { state in
            guard !state.stopping else { return false }
            state.live.insert(ticket)
            state.jobs.append((ticket, job))
            return true
        }
        if accepted { available.signal() }
    }

    /// Withdraws a job that has not started yet; true if it will not run.
    @discardableResult
    func withdraw(_ ticket: UInt64) -> Bool {
        state.withLock { $0.live.remove(ticket) != nil }
    }

    /// Stops the threads once they are idle. With `dropQueued`, jobs not started yet never run; otherwise they
    /// run first. Jobs already running finish on their own.
    func shutdown(dropQueued: Bool = true) {
        state.withLock { state in
            state.stopping = true
            if dropQueued { state.live.removeAll() }
        }
        for _ in 0..<width { available.signal() }
    }

    /// After ``shutdown(dropQueued:)``: waits, at most `timeout` in all, until every thread has ended,
    /// thread-local destructors included. Without `waitingForJobs`, a thread still in a job (a lookup a silent
    /// DNS server holds) is not waited for: it is detached and ends on its own.
    func join(timeout: Duration, waitingForJobs: Bool = false) {
        let start = MonotonicInstant.now()
        let busy = waitingForJobs ? [] : state.withLock { $0.busy }
        for (index, thread) in threads.withLock({ $0 }).enumerated() {
            if busy.contains(index) {
                thread.detach()
            } else {
                thread.join(timeout: timeout - (MonotonicInstant.now() - start))
            }
        }
    }

    private func work(_ index: Int) {
        while true {
            available.wait()
            let next: (@Sendable () -> Void)?? = state.withLock { state in
                while state.head < state.jobs.count {
                    let (ticket, job) = state.jobs[state.head]
                    state.head += 1
                    if state.head > 64 && state.head * 2 > state.jobs.count {
                        state.jobs.removeFirst(state.head)
                        state.head = 0
                    }
                    if state.live.remove(ticket) != nil {
                        state.busy.insert(index)
                        return .some(job)
                    }
                }
                return state.stopping ? .none : .some(nil)
            }
            switch next {
            case .none: return  // stopping, nothing left to run
            case .some(nil): continue  // only withdrawn jobs were queued
            case .some(let job?):
                job()
                state.withLock { _ = $0.busy.remove(index) }
            }
        }
    }
}
