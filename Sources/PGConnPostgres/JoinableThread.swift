import CLinux
import Glibc
import PGConnCore
import PGConnSync

/// A thread that can be waited for until it has ended, with a time limit.
///
/// Foundation's `Thread` cannot be joined, and its body returning is not the thread's end: glibc runs the
/// thread-local destructors afterwards, and OpenSSL frees a thread's random generator (which libpq's SCRAM
/// nonces create on every connect worker) and error queue there. A process that exits meanwhile cuts them short,
/// and LeakSanitizer reports OpenSSL's memory as leaked, in about one exit in five with work in flight.
/// ``Monitor/stop(timeout:)`` therefore joins the I/O thread and the workers before it returns
/// (``MonitorLoop/joinWorkers(timeout:)`` says which ones it waits for while they are in a job).
final class JoinableThread: Sendable {
    private let handle: pthread_t
    /// Joined or detached: either may happen once, never both.
    private let settled = Lock(false)

    private final class Start {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) {
            self.name = name
            self.body = body
        }
    }

    /// Starts `body` on a new thread named `name` for `top -H` and /proc (the kernel keeps 15 bytes).
    init(name: String, _ body: @escaping @Sendable () -> Void) {
        let start = Unmanaged.passRetained(Start(name: name, body: body)).toOpaque()
        var handle = pthread_t()
        let created = pthread_create(
            &handle, nil,
            { context in
                let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
                pgconn_name_thread(start.name)
                start.body()
                return nil
            }, start)
        // As Foundation's Thread.start: a process that cannot start its few threads cannot monitor anything.
        precondition(created == 0, "pthread_create for \(name): \(String(cString: strerror(created)))")
        self.handle = handle
    }

    /// Waits until the thread has ended, at most `timeout`. A thread still running then is detached, so that
    /// it is reclaimed when it ends; later calls return false at once.
    @discardableResult
    func join(timeout: Duration) -> Bool {
        settled.withLock { settled in
            guard !settled else { return false }
            settled = true
            let joined = pgconn_thread_join(handle, max(0, timeout.nanoseconds)) == 0
            if !joined { pthread_detach(handle) }
            return joined
        }
    }

    /// Gives the thread up without waiting: it is reclaimed when it ends.
    func detach() {
        settled.withLock { settled in
            guard !settled else { return }
            settled = true
            pthread_detach(handle)
        }
    }

    deinit { detach() }
}
