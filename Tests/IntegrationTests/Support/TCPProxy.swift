import Foundation

/// A TCP forwarder from 127.0.0.1:``port`` to 127.0.0.1:``upstreamPort`` whose behaviour tests switch at runtime.
///
/// Put between a client and PostgreSQL to fake network faults on a working server:
/// - ``Mode/forward``: bytes flow both ways.
/// - ``Mode/blackhole``: nothing is read or written in either direction, but every socket stays open (a
///   partition, a dead NAT entry); new clients are accepted and connected upstream, and held the same way.
///   Back in `.forward`, whatever was buffered meanwhile flows on.
/// - ``Mode/reset``: every client connection is closed with an RST (SO_LINGER 0) and its upstream closed; new
///   clients are reset as soon as they are accepted.
///
/// ``setMode(_:)`` returns once the I/O thread has applied the mode, so a test can act on it at once. At most
/// `maxConnections` pairs are kept; further clients are reset. One thread does all I/O with `poll`, on
/// blocking sockets: fine for test traffic, not a general-purpose proxy.
///
/// `Sendable`: all mutable state lives in `Loop`, guarded by its condition lock.
final class TCPProxy: Sendable {
    /// What the proxy does with traffic.
    enum Mode: Sendable, Equatable {
        case forward
        case blackhole
        case reset
    }

    /// The port on 127.0.0.1 clients connect to.
    let port: Int
    /// The port on 127.0.0.1 it forwards to.
    let upstreamPort: Int
    private let loop: Loop
    private let thread: JoinableThread

    init(upstreamPort: Int, mode: Mode = .forward, maxConnections: Int = 256) throws {
        let listener = try WakeableListener()
        port = listener.port
        self.upstreamPort = upstreamPort
        let loop = Loop(listener: listener, upstreamPort: upstreamPort, mode: mode, maxConnections: maxConnections)
        self.loop = loop
        thread = JoinableThread(name: "tcp-proxy-\(port)") { loop.run() }
    }

    deinit { close() }

    /// The mode last set (applied once ``setMode(_:)`` has returned).
    var mode: Mode { loop.condition.withLock { loop.mode } }

    /// Switches the mode and waits until the I/O thread has applied it (for `.reset`: every client is reset).
    func setMode(_ mode: Mode) {
        loop.condition.withLock {
            guard !loop.closing else { return }
            loop.mode = mode
            loop.requested += 1
            let target = loop.requested
            loop.listener.wake()
            while loop.applied < target && !loop.closing { loop.condition.wait() }
        }
    }

    /// Clients accepted so far, in every mode.
    var acceptedCount: Int { loop.condition.withLock { loop.acceptedTotal } }

    /// Client connections currently held (forwarding or black-holed).
    var openConnections: Int { loop.condition.withLock { loop.openPairs } }

    /// Stops the proxy and closes every connection (clients get a FIN). Idempotent.
    func close() {
        let first = loop.condition.withLock {
            defer {
                loop.closing = true
                loop.condition.broadcast()
            }
            return !loop.closing
        }
        guard first else { return }
        loop.listener.wake()
        thread.join()
        loop.listener.close()
    }

    /// The I/O loop. `@unchecked Sendable`: the vars above `pairs` are guarded by `condition`; `pairs` is
    /// touched only by the loop thread (and by nobody after it returned).
    private final class Loop: @unchecked Sendable {
        struct Pair {
            var client: Int32
            var upstream: Int32
        }

        let listener: WakeableListener
        let upstreamPort: Int
        let maxConnections: Int
        let condition = NSCondition()
        var mode: Mode
        var requested = 0
        var applied = 0
        var closing = false
        var acceptedTotal = 0
        var openPairs = 0
        private var pairs: [Pair] = []

        init(listener: WakeableListener, upstreamPort: Int, mode: Mode, maxConnections: Int) {
            self.listener = listener
            self.upstreamPort = upstreamPort
            self.mode = mode
            self.maxConnections = maxConnections
        }

        func run() {
            var buffer = [UInt8](repeating: 0, count: 65536)
            while true {
                let (mode, requested, closing) = condition.withLock { (self.mode, self.requested, self.closing) }
                if closing { break }
                if mode == .reset { resetAll() }
                if requested != condition.withLock({ applied }) {
                    condition.withLock {
                        applied = requested
                        openPairs = pairs.count
                        condition.broadcast()
                    }
                }

                var fds = listener.pollSet()
                if mode == .forward {
                    for pair in pairs {
                        fds.append(pollfd(fd: pair.client, events: Int16(POLLIN), revents: 0))
                        fds.append(pollfd(fd: pair.upstream, events: Int16(POLLIN), revents: 0))
                    }
                }
                let ready = poll(&fds, nfds_t(fds.count), -1)
                if ready < 0 && errno == EINTR { continue }
                if ready < 0 { break }
                if fds[0].revents != 0 { listener.drainWakes() }
                if mode == .forward {
                    var broken: Set<Int> = []
                    for index in pairs.indices {
                        let clientEvents = fds[2 + 2 * index].revents
                        let upstreamEvents = fds[3 + 2 * index].revents
                        let pair = pairs[index]
                        if clientEvents != 0 && !copy(from: pair.client, to: pair.upstream, &buffer) {
                            broken.insert(index)
                        } else if upstreamEvents != 0 && !copy(from: pair.upstream, to: pair.client, &buffer) {
                            broken.insert(index)
                        }
                    }
                    for index in broken.sorted(by: >) {
                        Glibc.close(pairs[index].client)
                        Glibc.close(pairs[index].upstream)
                        pairs.remove(at: index)
                    }
                }
                // Last: the pair indices above match the poll set only until a new pair is appended.
                if fds[1].revents != 0 { acceptClient(mode: mode) }
                condition.withLock { openPairs = pairs.count }
            }
            for pair in pairs {
                Glibc.close(pair.client)
                Glibc.close(pair.upstream)
            }
            pairs = []
            condition.withLock {
                openPairs = 0
                condition.broadcast()
            }
        }

        private func acceptClient(mode: Mode) {
            guard let client = listener.accept() else { return }
            condition.withLock { acceptedTotal += 1 }
            guard mode != .reset, pairs.count < maxConnections,
                let upstream = try? SocketIO.connect(port: upstreamPort)
            else {
                SocketIO.closeWithReset(client)
                return
            }
            pairs.append(Pair(client: client, upstream: upstream))
        }

        private func resetAll() {
            for pair in pairs {
                SocketIO.closeWithReset(pair.client)
                Glibc.close(pair.upstream)
            }
            pairs = []
        }

        /// Moves what is readable on `source` to `destination`; false on EOF or error (the pair is done).
        private func copy(from source: Int32, to destination: Int32, _ buffer: inout [UInt8]) -> Bool {
            let count = buffer.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { return true }
            guard count > 0 else { return false }
            return buffer.withUnsafeBytes {
                SocketIO.writeAll(destination, UnsafeRawBufferPointer(rebasing: $0[0..<count]))
            }
        }
    }
}
