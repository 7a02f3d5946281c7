import Dispatch
import Foundation
import PGConnSync
import Testing

@testable import PGConnPostgres

/// `WorkerPool.join`: what `Monitor.stop()` waits for before the process may exit.
@Suite(.serialized) struct WorkerPoolTests {
    /// The names of this process's threads that start with `prefix` (/proc/self/task/*/comm).
    static func threads(named prefix: String) -> [String] {
        let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
        return tasks.compactMap { task in
            guard let comm = FileManager.default.contents(atPath: "/proc/self/task/\(task)/comm") else { return nil }
            let name = String(decoding: comm, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            return name.hasPrefix(prefix) ? name : nil
        }
    }

    /// Submits a job that blocks until the returned gate is signalled; returns once it runs.
    static func blockAWorker(of pool: WorkerPool) -> DispatchSemaphore {
        let gate = DispatchSemaphore(value: 0)
        let running = DispatchSemaphore(value: 0)
        pool.submit(ticket: 1) {
            running.signal()
            gate.wait()
        }
        running.wait()
        return gate
    }

    @Test func joinEndsTheIdleThreadsAndDetachesOneBlockedInAJob() throws {
        let pool = WorkerPool(name: "pgconn-test-join-a", width: 3)
        let gate = Self.blockAWorker(of: pool)
        #expect(Self.threads(named: "test-join-a-").count == 3)
        pool.shutdown()
        let clock = ContinuousClock()
        let start = clock.now
        pool.join(timeout: .seconds(10))
        #expect(clock.now - start < .seconds(5), "a thread blocked in a job is not waited for")
        #expect(Self.threads(named: "test-join-a-").count == 1, "the two idle threads have ended when join returns")
        gate.signal()
        let deadline = clock.now + .seconds(10)
        while !Self.threads(named: "test-join-a-").isEmpty && clock.now < deadline { usleep(1_000) }
        #expect(Self.threads(named: "test-join-a-").isEmpty, "the detached thread ends once its job returns")
    }

    @Test func joinWaitingForJobsReturnsOnceTheRunningJobHasEnded() throws {
        let pool = WorkerPool(name: "pgconn-test-join-b", width: 2)
        let done = Lock(false)
        let running = DispatchSemaphore(value: 0)
        pool.submit(ticket: 1) {
            running.signal()
            usleep(200_000)
            done.withLock { $0 = true }
        }
        running.wait()
        pool.shutdown()
        pool.join(timeout: .seconds(10), waitingForJobs: true)
        #expect(done.withLock { $0 }, "join returned before the job it waits for")
        #expect(Self.threads(named: "test-join-b-").isEmpty)
    }

    @Test func joinGivesUpAtItsTimeoutOnAJobThatDoesNotEnd() throws {
        let pool = WorkerPool(name: "pgconn-test-join-c", width: 1)
        let gate = Self.blockAWorker(of: pool)
        pool.shutdown()
        let clock = ContinuousClock()
        let start = clock.now
        pool.join(timeout: .milliseconds(300), waitingForJobs: true)
        let waited = clock.now - start
        #expect(waited >= .milliseconds(290) && waited < .seconds(5), "waited \(waited)")
        #expect(Self.threads(named: "test-join-c-").count == 1)
        gate.signal()
    }
}
