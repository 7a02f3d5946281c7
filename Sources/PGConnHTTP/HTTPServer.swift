import CMicroHTTPD
import Dispatch
import PGConnCore
import PGConnSync
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// An HTTP/1.1 server on libmicrohttpd that hands every request to one handler, which answers now or later.
///
/// libmicrohttpd runs a small pool of polling threads (``threads``), each with its own epoll set and its share
/// of the connections, and calls the handler on the thread that owns the connection, so requests on different
/// connections run at once (a scrape that renders does not hold up `/health`). A handler must not block: it
/// answers from a snapshot (`.response`), or returns `.deferred` when the answer comes from another thread (a
/// probe on the monitor's loop, a reload). A deferred request's connection is suspended (taken out of the
/// epoll set; no thread waits for it) and its `respond` may be called from any thread: it resumes the
/// connection, and its polling thread queues the response the next time round, while the other connections
/// are served meanwhile. Bodies are read in full (at most
/// `maximumBodySize`, else 413) before the handler runs. `start()` binds exactly the listen address given
/// (see `ListenAddress`); `stop()` must be called before the last reference goes away.
///
/// Connections are bounded by `ConnectionLimits` (by default sized from the open-file limit when the server
/// starts), so idle or trickling clients from one address cannot take the slots the scrapes need.
public final class HTTPServer: Sendable {
    /// The largest request body a handler receives: 1 MiB. A larger body is read and discarded, then 413.
    public static let maximumBodySize = 1 << 20

    /// The version of the libmicrohttpd linked at run time, e.g. "0.9.75" (for `pgconn_exporter_build_info`).
    public static var libraryVersion: String {
        MHD_get_version().map { String(cString: $0) } ?? "unknown"
    }

    /// libmicrohttpd's polling threads (fewer when the connection limit is smaller, as each thread takes its
    /// share of the limit).
    static let threads = 4

    /// How often connections are checked against `ConnectionLimits.requestDeadline`.
    static let deadlineCheckInterval = Duration.milliseconds(500)

    /// How long `stop()` waits for the 503s it gave the deferred requests still waiting to be sent.
    static let stopDrainTimeout = Duration.seconds(1)

    /// The listen address as the user wrote it, e.g. ":9818" or "127.0.0.1:9818".
    public let listenAddress: String
    private let reply: @Sendable (HTTPRequest) -> HTTPReply
    private let configuredLimits: ConnectionLimits?
    /// The credentials HTTPS connections get; `nil` serves plain HTTP. Replaced by `replaceTLS(_:)`.
    private let tls: Lock<TLSCredentials?>
    private let running = Lock<Running?>(nil)

    /// - Parameters:
    ///   - limits: the connection limits; nil sizes them from the RLIMIT_NOFILE soft limit at each `start()`
    ///     (`ConnectionLimits.forThisProcess()`).
    ///   - tls: serve HTTPS with these credentials (see `TLSCredentials`); `nil` for plain HTTP.
    ///   - reply: called on the HTTP thread for every request; must not block (see `HTTPReply`).
    public init(
        listenAddress: String,
        limits: ConnectionLimits? = nil,
        tls: TLSCredentials? = nil,
        reply: @escaping @Sendable (HTTPRequest) -> HTTPReply
    ) {
        self.listenAddress = listenAddress
        self.configuredLimits = limits
        self.tls = Lock(tls)
        self.reply = reply
    }

    /// A server whose handler always answers at once.
    public convenience init(
        listenAddress: String,
        limits: ConnectionLimits? = nil,
        tls: TLSCredentials? = nil,
        handler: @escaping @Sendable (HTTPRequest) -> HTTPResponse
    ) {
        self.init(listenAddress: listenAddress, limits: limits, tls: tls, reply: { .response(handler($0)) })
    }

    /// Whether the server speaks HTTPS (fixed at `init`: libmicrohttpd cannot switch a daemon to TLS).
    public var servesTLS: Bool { tls.withLock { $0 != nil } }

    /// Gives the connections accepted from now on new credentials (a rotated certificate, another client CA or
    /// TLS version range); connections already open keep theirs. Returns false, changing nothing, when the
    /// server was made for plain HTTP.
    @discardableResult
    public func replaceTLS(_ credentials: TLSCredentials) -> Bool {
        let replaced = tls.withLock { current in
            guard current != nil else { return false }
            current = credentials
            return true
        }
        if replaced { running.withLock { $0?.dispatch.takeUnretainedValue().tls.withLock { $0 = credentials } } }
        return replaced
    }

    deinit {
        let wasRunning = running.withLock { $0 != nil }
        assert(!wasRunning, "HTTPServer on \(listenAddress) deinitialized while running: call stop() first")
        if wasRunning { stop() }
    }

    /// The port the server listens on (the kernel's choice when the address asked for port 0); 0 when stopped.
    public var boundPort: Int {
        running.withLock { $0.map { Int($0.port) } ?? 0 }
    }

    /// The bound socket address as "127.0.0.1:8080" or "[::]:8080", from getsockname(2); nil when stopped.
    var boundAddress: String? {
        running.withLock { $0?.boundAddress }
    }

    /// The limits in force; nil when stopped.
    public var limits: ConnectionLimits? {
        running.withLock { $0?.limits }
    }

    /// Connections the server holds now (accepted and not yet closed); 0 when stopped.
    var openConnections: Int {
        running.withLock { $0?.dispatch.takeUnretainedValue().deadlines.withLock { $0.count } ?? 0 }
    }

    /// Requests begun and not yet completed (each holds a `PendingRequest`); 0 when stopped.
    var openRequests: Int {
        running.withLock { $0?.dispatch.takeUnretainedValue().openRequests.load(ordering: .relaxed) ?? 0 }
    }

    /// Deferred requests not yet completed (suspended, or answered and not yet sent); 0 when stopped.
    var deferredRequests: Int {
        running.withLock { $0?.dispatch.takeUnretainedValue().suspended.withLock { $0.count } ?? 0 }
    }

    /// Parses and resolves the listen address, binds it and starts serving.
    ///
    /// Calling `start()` on a running server is a programmer error. After `stop()` it may start again.
    public func start() throws(HTTPServerError) {
        let address = try ListenAddress(parsing: listenAddress)
        try running.withLock { running throws(HTTPServerError) in
            precondition(running == nil, "HTTPServer.start() called twice on \(listenAddress)")
            let limits = configuredLimits ?? .forThisProcess()
            let credentials = tls.withLock { $0 }
            let dispatch = Unmanaged.passRetained(RequestDispatch(reply: reply, limits: limits, tls: credentials))
            var (daemon, error) = Self.startDaemon(address, limits: limits, tls: credentials, dispatch: dispatch)
            if daemon == nil, error == EAFNOSUPPORT, address.host == .allInterfaces {
                // No IPv6 on this machine: every IPv4 interface is the closest match to ":port".
                (daemon, error) = Self.startDaemon(
                    ListenAddress(host: .ipv4([0, 0, 0, 0]), port: address.port), limits: limits, tls: credentials,
                    dispatch: dispatch)
            }
            guard let daemon else {
                dispatch.release()
                let reason = error == 0 ? "libmicrohttpd could not start" : String(cString: strerror(error))
                throw .bindFailed(listenAddress, reason: reason)
            }
            running = Running(
                daemon: daemon,
                dispatch: dispatch,
                deadlineTimer: Self.startDeadlineTimer(dispatch.takeUnretainedValue()),
                limits: limits,
                port: pgconn_mhd_bound_port(daemon),
                boundAddress: Self.socketName(pgconn_mhd_listen_fd(daemon))
            )
        }
    }

    /// Stops listening, closes every connection and waits for a running handler to return. Idempotent.
    ///
    /// Deferred requests still waiting for their `respond` are answered 503 first, and given up to
    /// `stopDrainTimeout` to be sent (meanwhile the server still serves, and defers nothing); a `respond`
    /// called later does nothing. Never call it from a handler: it joins the thread the handler runs on.
    public func stop() {
        guard let stopped = running.withLock({ running in running.take() }) else { return }
        // libmicrohttpd 0.9.75 aborts in MHD_stop_daemon when a connection is suspended and not being resumed
        // (close_all_connections: "MHD_stop_daemon() called while we have suspended connections"), so every
        // waiting one is resumed first; closing the table in the same lock means no `respond` can touch a
        // connection from here on.
        let dispatch = stopped.dispatch.takeUnretainedValue()
        let draining = dispatch.suspended.withLock { suspended in
            for connection in suspended.stop(answering: .text("shutting down\n", status: 503)) {
                MHD_resume_connection(connection.pointer)
            }
            return suspended.count > 0
        }
        // Once MHD_stop_daemon has begun, libmicrohttpd drops the responses queued, so the 503s go out first.
        if draining {
            let timeout = DispatchTimeInterval.nanoseconds(Int(Self.stopDrainTimeout.nanoseconds))
            _ = dispatch.drained.wait(timeout: .now() + timeout)
        }
        // MHD_stop_daemon joins the polling thread, so no callback can use the dispatch object after it.
        MHD_stop_daemon(stopped.daemon)
        // The timer's handler holds its own reference to the dispatch object, released once cancelled.
        stopped.deadlineTimer.cancel()
        stopped.dispatch.release()
    }

    /// Returns the daemon, or nil and the errno of the failed start (0 when libmicrohttpd set none).
    private static func startDaemon(
        _ address: ListenAddress,
        limits: ConnectionLimits,
        tls: TLSCredentials?,
        dispatch: Unmanaged<RequestDispatch>
    ) -> (OpaquePointer?, Int32) {
        // MHD_ALLOW_SUSPEND_RESUME includes MHD_USE_ITC, the pipe through which a resume wakes the polling thread.
        var flags =
            MHD_USE_INTERNAL_POLLING_THREAD.rawValue | MHD_USE_EPOLL.rawValue | MHD_ALLOW_SUSPEND_RESUME.rawValue
        switch address.host {
        case .allInterfaces: flags |= MHD_USE_DUAL_STACK.rawValue
        case .ipv4: break
        case .ipv6: flags |= MHD_USE_IPv6.rawValue
        }
        if tls != nil { flags |= MHD_USE_TLS.rawValue }
        // libmicrohttpd needs a certificate and key to start TLS and reads them during MHD_start_daemon only,
        // as NUL-terminated text; every connection is given `tls`'s own credentials before its handshake.
        let certificate = (tls?.certificatePEM ?? []).map { CChar(bitPattern: $0) } + [0]
        let key = (tls?.keyPEM ?? []).map { CChar(bitPattern: $0) } + [0]
        return address.withSocketAddress { socketAddress in
            var options = [
                MHD_OptionItem(option: .CONNECTION_LIMIT, value: max(1, limits.total), ptr_value: nil),
                MHD_OptionItem(option: .PER_IP_CONNECTION_LIMIT, value: max(1, limits.perAddress), ptr_value: nil),
                MHD_OptionItem(option: .CONNECTION_TIMEOUT, value: limits.idleTimeoutSeconds, ptr_value: nil),
                MHD_OptionItem(
                    option: .THREAD_POOL_SIZE, value: max(1, min(threads, limits.total)), ptr_value: nil),
            ]
            if let socketAddress {
                // libmicrohttpd binds during MHD_start_daemon and keeps no reference to the address.
                options.append(
                    MHD_OptionItem(
                        option: .SOCK_ADDR, value: 0, ptr_value: UnsafeMutableRawPointer(mutating: socketAddress)
                    ))
            }
            var error: Int32 = 0
            let daemon = certificate.withUnsafeBufferPointer { certificate in
                key.withUnsafeBufferPointer { key in
                    if tls != nil {
                        options.append(
                            MHD_OptionItem(
                                option: .HTTPS_MEM_CERT, value: 0,
                                ptr_value: UnsafeMutableRawPointer(mutating: certificate.baseAddress)))
                        options.append(
                            MHD_OptionItem(
                                option: .HTTPS_MEM_KEY, value: 0,
                                ptr_value: UnsafeMutableRawPointer(mutating: key.baseAddress)
                            ))
                    }
                    options.append(MHD_OptionItem(option: .END, value: 0, ptr_value: nil))
                    return options.withUnsafeMutableBufferPointer { options in
                        pgconn_mhd_start_daemon(
                            flags, address.port, handleAccess, handleCompletion, handleConnectionEvent,
                            dispatch.toOpaque(), options.baseAddress, &error)
                    }
                }
            }
            return (daemon, error)
        }
    }

    /// A timer that shuts down the connections past their request deadline, on its own queue.
    ///
    /// shutdown(2), not close(2): libmicrohttpd then reads end-of-file and closes the connection itself. The
    /// socket cannot have been closed and reused meanwhile, because libmicrohttpd tells `handleConnectionEvent`
    /// of the close (which takes the same lock) before it closes the socket.
    private static func startDeadlineTimer(_ dispatch: RequestDispatch) -> any DispatchSourceTimer {
        let timer = DispatchSource.makeTimerSource(queue: DispatchQueue(label: "pgconn.http.request-deadlines"))
        let interval = DispatchTimeInterval.nanoseconds(Int(deadlineCheckInterval.nanoseconds))
        timer.schedule(deadline: .now() + interval, repeating: interval, leeway: .milliseconds(50))
        timer.setEventHandler {
            let now = monotonicNow()
            dispatch.deadlines.withLock { deadlines in
                for socket in deadlines.expire(now: now) { _ = shutdown(socket, Int32(SHUT_RDWR)) }
            }
        }
        timer.resume()
        return timer
    }

    /// getsockname(2) of the listen socket as "host:port", IPv6 in brackets.
    private static func socketName(_ socket: Int32) -> String? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let status = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(socket, $0, &length) }
        }
        guard socket >= 0, status == 0 else { return nil }
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        func numeric(_ family: Int32, _ address: UnsafeRawPointer) -> String {
            inet_ntop(family, address, &text, socklen_t(text.count))
            return String(decoding: text.prefix { $0 != 0 }.map(UInt8.init), as: UTF8.self)
        }
        // Unsafe pointer use: ss_family says which sockaddr type getsockname(2) wrote into the storage.
        switch Int32(storage.ss_family) {
        case AF_INET:
            var ipv4 = withUnsafeBytes(of: storage) { $0.loadUnaligned(as: sockaddr_in.self) }
            return "\(numeric(AF_INET, &ipv4.sin_addr)):\(UInt16(bigEndian: ipv4.sin_port))"
        case AF_INET6:
            var ipv6 = withUnsafeBytes(of: storage) { $0.loadUnaligned(as: sockaddr_in6.self) }
            return "[\(numeric(AF_INET6, &ipv6.sin6_addr))]:\(UInt16(bigEndian: ipv6.sin6_port))"
        default:
            return nil
        }
    }
}

/// The running daemon and the context its callbacks receive.
///
/// `@unchecked Sendable`: the daemon pointer is only used under `HTTPServer.running`'s lock or after being
/// taken out of it by `stop()`, and libmicrohttpd's daemon functions may be called from any thread; the
/// same holds for the dispatch timer, whose methods are thread-safe.
private struct Running: @unchecked Sendable {
    var daemon: OpaquePointer
    /// Retained for the daemon's lifetime: released in `stop()` once `MHD_stop_daemon` has returned.
    var dispatch: Unmanaged<RequestDispatch>
    var deadlineTimer: any DispatchSourceTimer
    var limits: ConnectionLimits
    var port: UInt16
    var boundAddress: String?
}

/// What the C callbacks need: the handler, the request deadlines and the deferred requests. Passed to
/// libmicrohttpd as the callbacks' closure pointer.
private final class RequestDispatch: Sendable {
    let reply: @Sendable (HTTPRequest) -> HTTPReply
    /// Keyed by the connection pointer, which is unique between libmicrohttpd's STARTED and CLOSED events.
    let deadlines: Lock<RequestDeadlines<UInt>>
    /// The deferred requests. A connection is suspended and resumed only under this lock (see
    /// `SuspendedRequests`). Lock order: this lock, then libmicrohttpd's own mutex inside
    /// `MHD_suspend_connection` and `MHD_resume_connection`; libmicrohttpd never holds that mutex while it
    /// calls back into this file, so the two cannot deadlock.
    let suspended = Lock(SuspendedRequests<SuspendedConnection>())
    /// Signalled when the last deferred request completed after `stop()` closed the table.
    let drained = DispatchSemaphore(value: 0)
    /// `PendingRequest`s retained as libmicrohttpd's per-request pointer and not yet released.
    let openRequests = Atomic<Int>(0)
    /// What a new HTTPS connection is given; `nil` over plain HTTP.
    let tls: Lock<TLSCredentials?>

    init(reply: @escaping @Sendable (HTTPRequest) -> HTTPReply, limits: ConnectionLimits, tls: TLSCredentials?) {
        self.reply = reply
        self.deadlines = Lock(RequestDeadlines(limit: limits.requestDeadline))
        self.tls = Lock(tls)
    }

    /// A deferred request's `respond`: resumes its connection when it is still waiting, else does nothing.
    func answer(_ ticket: SuspendedRequests<SuspendedConnection>.Ticket, with response: HTTPResponse) {
        suspended.withLock { suspended in
            guard let connection = suspended.answer(ticket, with: response) else { return }
            MHD_resume_connection(connection.pointer)
        }
    }
}

/// libmicrohttpd's pointer to a connection whose request was deferred, as `RequestDispatch.suspended` keeps it.
///
/// `@unchecked Sendable`: it is used only under that lock and only while its entry says the connection is
/// suspended, for `MHD_resume_connection`, which libmicrohttpd allows from any thread; libmicrohttpd does not
/// free a suspended connection, and the request-completed callback removes the entry before it frees one.
private struct SuspendedConnection: @unchecked Sendable {
    var pointer: OpaquePointer
}

/// The key of a connection in `RequestDispatch.deadlines`.
private func deadlineKey(_ connection: OpaquePointer) -> UInt {
    UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(connection)))
}

/// The connection-notification callback: a connection was accepted or is about to be closed.
private func handleConnectionEvent(
    closure: UnsafeMutableRawPointer?,
    connection: OpaquePointer?,
    socketContext: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
    event: MHD_ConnectionNotificationCode
) {
    guard let closure, let connection else { return }
    let dispatch = Unmanaged<RequestDispatch>.fromOpaque(closure).takeUnretainedValue()
    let key = deadlineKey(connection)
    switch event {
    case .CONNECTION_NOTIFY_STARTED:
        let socket = pgconn_mhd_connection_fd(connection)
        guard socket >= 0 else { return }
        if let session = pgconn_mhd_tls_session(connection), let credentials = dispatch.tls.withLock({ $0 }) {
            // The connection keeps the credentials it started with alive (its socket context) until it closes.
            guard let socketContext, credentials.apply(to: session) else {
                // Never let the handshake run on libmicrohttpd's own credentials, which check no client.
                _ = shutdown(socket, Int32(SHUT_RDWR))
                return
            }
            socketContext.pointee = Unmanaged.passRetained(credentials).toOpaque()
        }
        let now = monotonicNow()
        dispatch.deadlines.withLock { $0.opened(key, socket: socket, now: now) }
    default:
        dispatch.deadlines.withLock { $0.closed(key) }
        if let socketContext, let retained = socketContext.pointee {
            Unmanaged<TLSCredentials>.fromOpaque(retained).release()
            socketContext.pointee = nil
        }
    }
}

/// The part of a request that spans several callbacks: its body, and the ticket of a deferred answer.
///
/// Lives in libmicrohttpd's per-request pointer (`con_cls`) from the first callback until the
/// request-completed callback, and is only touched on the polling thread that owns its connection. A deferred
/// answer itself waits in `RequestDispatch.suspended`, under the lock, because `respond` hands it over from
/// another thread.
private final class PendingRequest {
    var body: [UInt8] = []
    var tooLarge = false
    /// Set once the request was deferred (its entry in `RequestDispatch.suspended`), kept until completion.
    var ticket: SuspendedRequests<SuspendedConnection>.Ticket?

    func append(_ bytes: UnsafeRawBufferPointer) {
        guard !tooLarge else { return }
        if body.count + bytes.count > HTTPServer.maximumBodySize {
            tooLarge = true
            body = []
        } else {
            body.append(contentsOf: bytes)
        }
    }
}

/// The access handler: called once when the headers are in, once per body chunk, then once to answer, and
/// for a deferred answer once more after the connection was resumed, to queue it.
private func handleAccess(
    closure: UnsafeMutableRawPointer?,
    connection: OpaquePointer?,
    url: UnsafePointer<CChar>?,
    method: UnsafePointer<CChar>?,
    version: UnsafePointer<CChar>?,
    uploadData: UnsafePointer<CChar>?,
    uploadDataSize: UnsafeMutablePointer<Int>?,
    requestState: UnsafeMutablePointer<UnsafeMutableRawPointer?>?
) -> pgconn_mhd_result {
    guard let closure, let connection, let url, let method, let uploadDataSize, let requestState else {
        return PGCONN_MHD_NO
    }
    guard let state = requestState.pointee else {
        let pending = PendingRequest()
        if let length = MHD_lookup_connection_value(connection, .HEADER_KIND, "Content-Length"),
            let declared = Int(String(cString: length)), declared > HTTPServer.maximumBodySize
        {
            pending.tooLarge = true
        }
        requestState.pointee = Unmanaged.passRetained(pending).toOpaque()
        Unmanaged<RequestDispatch>.fromOpaque(closure).takeUnretainedValue().openRequests.add(1, ordering: .relaxed)
        return PGCONN_MHD_YES
    }
    let pending = Unmanaged<PendingRequest>.fromOpaque(state).takeUnretainedValue()
    if uploadDataSize.pointee > 0 {
        if let uploadData {
            pending.append(UnsafeRawBufferPointer(start: uploadData, count: uploadDataSize.pointee))
        }
        uploadDataSize.pointee = 0
        return PGCONN_MHD_YES
    }
    let dispatch = Unmanaged<RequestDispatch>.fromOpaque(closure).takeUnretainedValue()
    if let ticket = pending.ticket {
        // Resumed: `respond` (or `stop()`) left the answer in the table; nothing else resumes a connection.
        let response = dispatch.suspended.withLock { $0.take(ticket) }
        return queue(response ?? .text("No answer for a resumed request\n", status: 500), on: connection)
    }
    // The request is in: from here it is being answered, however long a deferred answer takes.
    dispatch.deadlines.withLock { $0.answering(deadlineKey(connection)) }
    let reply: HTTPReply
    if pending.tooLarge {
        reply = .response(.text("Request body larger than \(HTTPServer.maximumBodySize) bytes\n", status: 413))
    } else {
        let request = HTTPRequest(
            method: String(cString: method),
            path: String(cString: url),
            query: connectionValues(connection, kind: .GET_ARGUMENT_KIND),
            headers: connectionValues(connection, kind: .HEADER_KIND),
            body: pending.body
        )
        pending.body = []
        reply = dispatch.reply(request)
    }
    switch reply {
    case .response(let response):
        return queue(response, on: connection)
    case .deferred(let start):
        let ticket = dispatch.suspended.withLock { suspended in
            let ticket = suspended.suspend(SuspendedConnection(pointer: connection))
            if ticket != nil { MHD_suspend_connection(connection) }
            return ticket
        }
        guard let ticket else { return queue(.text("shutting down\n", status: 503), on: connection) }
        pending.ticket = ticket
        // Suspended before `start` runs, so a `respond` inside it resumes like any other. It holds the dispatch
        // weakly: a `respond` kept after the server stopped neither keeps the object alive nor reaches it.
        start { [weak dispatch] response in dispatch?.answer(ticket, with: response) }
        // No response queued: libmicrohttpd calls again once the connection is resumed.
        return PGCONN_MHD_YES
    }
}

/// The request-completed callback (sent, failed, client gone, or daemon stopping): forgets a deferred request
/// and releases the `PendingRequest` the access handler stored.
private func handleCompletion(
    closure: UnsafeMutableRawPointer?,
    connection: OpaquePointer?,
    requestState: UnsafeMutablePointer<UnsafeMutableRawPointer?>?,
    termination: MHD_RequestTerminationCode
) {
    let dispatch = closure.map { Unmanaged<RequestDispatch>.fromOpaque($0).takeUnretainedValue() }
    if let dispatch, let connection {
        let now = monotonicNow()
        dispatch.deadlines.withLock { $0.completed(deadlineKey(connection), now: now) }
    }
    guard let requestState, let state = requestState.pointee else { return }
    let pending = Unmanaged<PendingRequest>.fromOpaque(state)
    if let dispatch, let ticket = pending.takeUnretainedValue().ticket,
        dispatch.suspended.withLock({ $0.completed(ticket) })
    {
        dispatch.drained.signal()
    }
    pending.release()
    requestState.pointee = nil
    dispatch?.openRequests.subtract(1, ordering: .relaxed)
}

/// Header or query values of a connection, in arrival order. Header names are lowercased and repeated
/// headers joined with ", "; of repeated query keys the first wins.
private func connectionValues(_ connection: OpaquePointer, kind: MHD_ValueKind) -> [String: String] {
    var pairs: [(String, String)] = []
    _ = withUnsafeMutablePointer(to: &pairs) { pairs in
        MHD_get_connection_values(
            connection, kind,
            { closure, _, key, value in
                guard let closure, let key else { return PGCONN_MHD_YES }
                let pairs = closure.assumingMemoryBound(to: [(String, String)].self)
                pairs.pointee.append((String(cString: key), value.map { String(cString: $0) } ?? ""))
                return PGCONN_MHD_YES
            }, pairs)
    }
    if kind == .HEADER_KIND {
        let lowercased = pairs.map { ($0.0.lowercased(), $0.1) }
        return Dictionary(lowercased, uniquingKeysWith: { first, second in "\(first), \(second)" })
    }
    return Dictionary(pairs, uniquingKeysWith: { first, _ in first })
}

/// Copies the response into libmicrohttpd (a shared body is lent instead: retained until libmicrohttpd's free
/// callback; libmicrohttpd only reads it, whatever its `void *` says) and queues it; the C response is destroyed here (MHD keeps its own reference until sent).
private func queue(_ response: HTTPResponse, on connection: OpaquePointer) -> pgconn_mhd_result {
    let created: OpaquePointer?
    if let shared = response.shared {
        let retained = Unmanaged.passRetained(shared)
        created = MHD_create_response_from_buffer_with_free_callback_cls(
            shared.count, UnsafeMutableRawPointer(mutating: shared.baseAddress), releaseSharedBytes, retained.toOpaque()
        )
        if created == nil { retained.release() }
    } else {
        created = response.body.withUnsafeBytes { body in
            MHD_create_response_from_buffer(
                body.count, UnsafeMutableRawPointer(mutating: body.baseAddress),
                .RESPMEM_MUST_COPY)
        }
    }
    guard let created else { return PGCONN_MHD_NO }
    defer { MHD_destroy_response(created) }
    var hasContentType = false
    for (name, value) in response.headers {
        switch name.lowercased() {
        case "content-length": continue  // libmicrohttpd sends the real length
        case "content-type": hasContentType = true
        default: break
        }
        _ = MHD_add_response_header(created, name, value)
    }
    if !hasContentType {
        _ = MHD_add_response_header(created, "Content-Type", "application/octet-stream")
    }
    return MHD_queue_response(connection, UInt32(clamping: response.status), created)
}

/// libmicrohttpd's free callback for a lent body: the response that sent it is gone.
private let releaseSharedBytes: MHD_ContentReaderFreeCallback = { context in
    guard let context else { return }
    Unmanaged<SharedBytes>.fromOpaque(context).release()
}

/// CLOCK_MONOTONIC, for the request deadlines.
func monotonicNow() -> MonotonicInstant {
    var spec = timespec()
    clock_gettime(CLOCK_MONOTONIC, &spec)
    return MonotonicInstant(nanoseconds: Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec))
}
