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
/// - ``Mode/latency(_:jitter:)``: every chunk is delivered its delay after it was read, in both directions, plus
///   up to `jitter` more at random (order is kept: a chunk never overtakes the one before).
/// - ``Mode/throttle(bytesPerSecond:)``: each direction of each connection carries at most that many bytes a
///   second.
/// - ``Mode/dropAfter(bytes:)``: each connection forwards that many more bytes from the server, then the client
///   gets an RST and the upstream is closed: a connection cut in the middle of a result.
/// - ``Mode/refuse``: the proxy stops listening, so new clients are refused (ECONNREFUSED); connections it holds
///   go on forwarding. Any other mode listens again, on the same port.
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
        case latency(Duration, jitter: Duration = .zero)
        case throttle(bytesPerSecond: Int)
        case dropAfter(bytes: Int)
        case refuse
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
        /// Bytes waiting to be written to one side, each chunk with when it is due.
        struct Queue {
            var chunks: [(due: ContinuousClock.Instant, bytes: [UInt8])] = []
            /// When the last chunk is due: a new one is never due before it (order, throttling).
            var lastDue: ContinuousClock.Instant?

            mutating func add(_ bytes: [UInt8], due: ContinuousClock.Instant) {
                let at = max(due, lastDue ?? due)
                chunks.append((at, bytes))
                lastDue = at
            }
        }

        struct Pair {
            var client: Int32
            var upstream: Int32
            var toUpstream = Queue()
            var toClient = Queue()
            /// Under `.dropAfter`: bytes from the server still to forward before the cut.
            var budget: Int?
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
        private var listening = true
        private var appliedMode: Mode?
        private let clock = ContinuousClock()

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
                if mode != appliedMode { enter(mode) }
                if mode == .reset { resetAll() }
                if requested != condition.withLock({ applied }) {
                    condition.withLock {
                        applied = requested
                        openPairs = pairs.count
                        condition.broadcast()
                    }
                }

                var fds = listener.pollSet()
                if !listening { fds[1].fd = -1 }  // poll ignores negative descriptors
                let reading = mode != .blackhole
                if reading {
                    for pair in pairs {
                        fds.append(pollfd(fd: pair.client, events: Int16(POLLIN), revents: 0))
                        fds.append(pollfd(fd: pair.upstream, events: Int16(POLLIN), revents: 0))
                    }
                }
                let ready = poll(&fds, nfds_t(fds.count), reading ? timeoutUntilNextDue() : -1)
                if ready < 0 && errno == EINTR { continue }
                if ready < 0 { break }
                if fds[0].revents != 0 { listener.drainWakes() }
                if reading {
                    var broken: Set<Int> = []
                    for index in pairs.indices {
                        let clientEvents = fds[2 + 2 * index].revents
                        let upstreamEvents = fds[3 + 2 * index].revents
                        if clientEvents != 0 && !receive(from: index, upstream: false, mode: mode, &buffer) {
                            broken.insert(index)
                        } else if upstreamEvents != 0 && !receive(from: index, upstream: true, mode: mode, &buffer) {
                            broken.insert(index)
                        }
                    }
                    for index in pairs.indices where !broken.contains(index) && !flushDue(index) {
                        broken.insert(index)
                    }
                    for index in broken.sorted(by: >) {
                        Glibc.close(pairs[index].client)
                        Glibc.close(pairs[index].upstream)
                        pairs.remove(at: index)
                    }
                }
                // Last: the pair indices above match the poll set only until a new pair is appended.
                if listening, fds[1].revents != 0 { acceptClient(mode: mode) }
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

        /// Applies what a new mode changes once: the listening socket, and `.dropAfter`'s budgets.
        private func enter(_ mode: Mode) {
            appliedMode = mode
            if mode == .refuse, listening {
                // An unbound socket in place of the listening one: the port refuses, the descriptor stays ours.
                let placeholder = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
                dup2(placeholder, listener.fd)
                Glibc.close(placeholder)
                listening = false
            } else if mode != .refuse, !listening, let (fresh, _) = try? SocketIO.listen(port: listener.port) {
                dup2(fresh, listener.fd)
                Glibc.close(fresh)
                listening = true
            }
            let budget: Int? = if case .dropAfter(let bytes) = mode { bytes } else { nil }
            for index in pairs.indices { pairs[index].budget = budget }
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
            var pair = Pair(client: client, upstream: upstream)
            if case .dropAfter(let bytes) = mode { pair.budget = bytes }
            pairs.append(pair)
        }

        private func resetAll() {
            for pair in pairs {
                SocketIO.closeWithReset(pair.client)
                Glibc.close(pair.upstream)
            }
            pairs = []
        }

        /// Reads what one side of pair `index` has and queues it for the other, as `mode` says; false on EOF,
        /// an error or a `.dropAfter` cut (the pair is done).
        private func receive(from index: Int, upstream: Bool, mode: Mode, _ buffer: inout [UInt8]) -> Bool {
            let source = upstream ? pairs[index].upstream : pairs[index].client
            let count = buffer.withUnsafeMutableBytes { recv(source, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { return true }
            guard count > 0 else { return false }
            var bytes = Array(buffer[0..<count])
            var cut = false
            if upstream, let budget = pairs[index].budget {
                if bytes.count >= budget {
                    bytes = Array(bytes.prefix(budget))
                    cut = true
                } else {
                    pairs[index].budget = budget - bytes.count
                }
            }
            let now = clock.now
            var queue = upstream ? pairs[index].toClient : pairs[index].toUpstream
            switch mode {
            case .latency(let delay, let jitter):
                let extra = jitter > .zero ? Duration.nanoseconds(Int64.random(in: 0...jitter.nanosecondsValue)) : .zero
                queue.add(bytes, due: now + delay + extra)
            case .throttle(let rate):
                let piece = max(1, rate / 20)
                for start in stride(from: 0, to: bytes.count, by: piece) {
                    let chunk = Array(bytes[start..<min(start + piece, bytes.count)])
                    let spacing = Duration.nanoseconds(Int64(chunk.count) * 1_000_000_000 / Int64(max(1, rate)))
                    queue.add(chunk, due: max(now, queue.lastDue ?? now) + spacing)
                }
            default:
                queue.add(bytes, due: now)
            }
            if upstream { pairs[index].toClient = queue } else { pairs[index].toUpstream = queue }
            guard flushDue(index) else { return false }
            if cut {
                SocketIO.closeWithReset(pairs[index].client)
                pairs[index].client = -1
                Glibc.close(pairs[index].upstream)
                pairs[index].upstream = -1
                return false
            }
            return true
        }

        /// Writes the chunks of pair `index` that are due; false if a side is gone.
        private func flushDue(_ index: Int) -> Bool {
            let now = clock.now
            for upstream in [true, false] {
                var queue = upstream ? pairs[index].toUpstream : pairs[index].toClient
                let destination = upstream ? pairs[index].upstream : pairs[index].client
                while let first = queue.chunks.first, first.due <= now {
                    queue.chunks.removeFirst()
                    let written = first.bytes.withUnsafeBytes { SocketIO.writeAll(destination, $0) }
                    if !written { return false }
                }
                if upstream { pairs[index].toUpstream = queue } else { pairs[index].toClient = queue }
            }
            return true
        }

        /// Milliseconds until the next queued chunk is due (at least 1), or -1 when nothing waits.
        private func timeoutUntilNextDue() -> Int32 {
            let dues = pairs.flatMap { [$0.toUpstream.chunks.first?.due, $0.toClient.chunks.first?.due] }.compactMap {
                $0
            }
            guard let next = dues.min() else { return -1 }
            let wait = next - clock.now
            return Int32(clamping: max(1, (wait.nanosecondsValue + 999_999) / 1_000_000))
        }
    }
}

extension Duration {
    /// The whole duration in nanoseconds (test durations are far below the 292 years that overflow).
    fileprivate var nanosecondsValue: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
