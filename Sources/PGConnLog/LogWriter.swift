import CLinux
import Dispatch
import Foundation
import Glibc
import PGConnSync
import Synchronization

/// Writes log lines to a file descriptor (stderr) from one thread of its own, so logging never blocks the caller.
///
/// Callers append to a bounded queue and return at once; the writer thread takes everything queued and writes
/// it with write(2). When the queue holds `capacity` lines, a new line is dropped, not waited for: a stderr pipe
/// that nobody reads must not stop the I/O loop (it used to block inside the log write, and a healthy target's
/// probes stopped). A write that fails (EPIPE when the reader went away, EBADF, EIO, EAGAIN on a non-blocking
/// stderr) gives up on that line silently and never traps, unlike `FileHandle.write`. Every line that is not
/// written, queue full or write failed, is reported to `onDrop` (the exporter counts them in
/// `pgconn_exporter_log_lines_dropped_total`).
///
/// Memory is bounded by `capacity` lines waiting plus the batch the writer is writing (at most `capacity` more).
/// The writer thread blocks SIGPIPE, so its writes to a broken pipe return EPIPE even if the process did not
/// ignore the signal. Lines keep the order in which `write(_:)` calls acquired the lock.
public final class LogWriter: Sendable {
    /// The queue length the exporter uses: about a minute of state changes of a few hundred flapping targets.
    public static let defaultCapacity = 4096

    private struct State {
        var queue: [[UInt8]] = []
        /// The writer found the queue empty and waits (or is about to wait) on `wake`: the next append signals.
        var writerIdle = false
        /// `close` was called: new lines are dropped, the writer exits once the queue is empty.
        var closing = false
        /// The writer thread has written everything and exited.
        var finished = false
    }

    private let fileDescriptor: Int32
    private let capacity: Int
    private let onDrop: @Sendable (Int) -> Void
    private let state = Lock(State())
    private let wake = DispatchSemaphore(value: 0)
    private let done = DispatchSemaphore(value: 0)

    /// Starts the writer thread on `fileDescriptor` (2, stderr, by default; never closed). `onDrop` is called
    /// with the number of lines lost, from the thread that logged (queue full) or from the writer thread (write
    /// failed); it must not log.
    public init(
        fileDescriptor: Int32 = 2, capacity: Int = LogWriter.defaultCapacity,
        onDrop: @escaping @Sendable (Int) -> Void = { _ in }
    ) {
        precondition(capacity > 0, "LogWriter capacity must be positive")  // A programming error, not input.
        self.fileDescriptor = fileDescriptor
        self.capacity = capacity
        self.onDrop = onDrop
        let thread = Thread { [self] in
            pgconn_name_thread("pgconn-log")
            run()
        }
        thread.name = "pgconn-log"
        thread.start()
    }

    /// Queues `line` and a newline for writing; never blocks on the file descriptor. Drops the line (and reports
    /// it) when the queue is full or the writer is closed.
    public func write(_ line: String) {
        var bytes = Array(line.utf8)
        bytes.append(0x0A)
        let (accepted, signal) = state.withLock { state -> (Bool, Bool) in
            guard !state.closing, state.queue.count < capacity else { return (false, false) }
            state.queue.append(bytes)
            defer { state.writerIdle = false }
            return (true, state.writerIdle)
        }
        if signal { wake.signal() }
        if !accepted { onDrop(1) }
    }

    /// Lines queued and not yet taken by the writer thread.
    public var pendingLines: Int { state.withLock { $0.queue.count } }

    /// Stops accepting lines and waits up to `timeout` for the writer to write what is queued. Returns whether it
    /// did: false when the file descriptor blocks (a pipe nobody reads), and the thread is left blocked in write(2)
    /// for the process exit to end.
    @discardableResult
    public func close(timeout: Duration) -> Bool {
        let signal = state.withLock { state -> Bool in
            state.closing = true
            defer { state.writerIdle = false }
            return state.writerIdle
        }
        if signal { wake.signal() }
        if state.withLock({ $0.finished }) { return true }
        let nanoseconds = timeout.components.seconds * 1_000_000_000 + timeout.components.attoseconds / 1_000_000_000
        return done.wait(timeout: .now() + .nanoseconds(Int(nanoseconds))) == .success
    }

    /// Writes all of `bytes` to `fileDescriptor` with write(2): retries EINTR and partial writes, returns false on
    /// any other error (or a zero-length write) without trapping. For messages written before the writer exists.
    @discardableResult
    public static func writeAll(_ bytes: [UInt8], to fileDescriptor: Int32) -> Bool {
        bytes.withUnsafeBytes { buffer in
            guard var next = buffer.baseAddress else { return true }
            var left = buffer.count
            while left > 0 {
                let written = Glibc.write(fileDescriptor, next, left)
                if written > 0 {
                    next += written
                    left -= written
                } else if written < 0, errno == EINTR {
                    continue
                } else {
                    return false
                }
            }
            return true
        }
    }

    /// The writer thread: takes the whole queue at once, writes it line by line, sleeps when there is nothing.
    private func run() {
        var blocked = sigset_t()
        sigemptyset(&blocked)
        sigaddset(&blocked, SIGPIPE)
        pthread_sigmask(SIG_BLOCK, &blocked, nil)

        var batch: [[UInt8]] = []
        while true {
            let next = state.withLock { state -> Bool? in
                if !state.queue.isEmpty {
                    swap(&batch, &state.queue)
                    return true
                }
                if state.closing {
                    state.finished = true
                    return false
                }
                state.writerIdle = true
                return nil
            }
            switch next {
            case nil:
                wake.wait()
            case true?:
                var failed = 0
                for line in batch where !Self.writeAll(line, to: fileDescriptor) { failed += 1 }
                batch.removeAll(keepingCapacity: true)
                if failed > 0 { onDrop(failed) }
            case false?:
                done.signal()
                return
            }
        }
    }
}
