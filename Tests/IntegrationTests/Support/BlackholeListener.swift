import Foundation

/// A TCP listener on 127.0.0.1 that accepts connections and then never reads, answers or closes them.
///
/// It stands in for a server that hangs after the TCP handshake: a client's connect succeeds, its startup
/// packet sits unread in the kernel buffer, and only the client's own timeout ends the wait. Accepted sockets
/// stay open until ``close()`` (also called from `deinit`). At most `maxConnections` are kept; later ones are
/// closed at once, so a runaway client cannot exhaust file descriptors.
///
/// `Sendable`: all mutable state lives in `Loop`, guarded by its lock. The accept loop runs on its own thread
/// and is stopped through a wake pipe, never by closing a descriptor under it.
final class BlackholeListener: Sendable {
    /// The port on 127.0.0.1 it listens on.
    let port: Int
    private let loop: Loop
    private let thread: JoinableThread

    init(maxConnections: Int = 256) throws {
        let listener = try WakeableListener()
        port = listener.port
        let loop = Loop(listener: listener, maxConnections: maxConnections)
        self.loop = loop
        thread = JoinableThread(name: "blackhole-\(port)") { loop.run() }
    }

    deinit { close() }

    /// How many connections it has accepted so far (including any closed for exceeding `maxConnections`).
    var acceptedCount: Int { loop.lock.withLock { loop.acceptedTotal } }

    /// Stops listening and closes every accepted connection. Idempotent.
    func close() {
        let first = loop.lock.withLock {
            defer { loop.closed = true }
            return !loop.closed
        }
        guard first else { return }
        loop.listener.wake()
        thread.join()
        loop.closeAll()
    }

    /// The accept loop and the sockets it holds; `@unchecked Sendable` because `lock` guards the vars.
    private final class Loop: @unchecked Sendable {
        let listener: WakeableListener
        let maxConnections: Int
        let lock = NSLock()
        var accepted: [Int32] = []
        var acceptedTotal = 0
        var closed = false

        init(listener: WakeableListener, maxConnections: Int) {
            self.listener = listener
            self.maxConnections = maxConnections
        }

        func run() {
            while true {
                var fds = listener.pollSet()
                let ready = poll(&fds, nfds_t(fds.count), -1)
                if ready < 0 && errno == EINTR { continue }
                if ready < 0 || fds[0].revents != 0 { return }
                guard fds[1].revents != 0 else { continue }
                guard let client = listener.accept() else { continue }
                lock.withLock {
                    acceptedTotal += 1
                    if accepted.count < maxConnections {
                        accepted.append(client)
                    } else {
                        Glibc.close(client)
                    }
                }
            }
        }

        /// Called once, after the loop thread has returned.
        func closeAll() {
            let sockets = lock.withLock {
                defer { accepted = [] }
                return accepted
            }
            for fd in sockets { Glibc.close(fd) }
            listener.close()
        }
    }
}
