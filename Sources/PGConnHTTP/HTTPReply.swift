/// What a handler returns: an answer now, or one that comes later.
///
/// A handler runs on one of the server's few HTTP threads, so it must not wait. For an answer that another thread
/// computes (a probe on the monitor's loop, a reload), it returns `.deferred`: the server suspends the
/// connection, which costs no thread, and keeps serving the others.
public enum HTTPReply: Sendable {
    case response(HTTPResponse)
    /// The server suspends the connection (no thread waits) and calls `start` once with `respond`; call
    /// `respond` exactly once, from any thread, even synchronously inside `start`. Later calls are ignored;
    /// after the server stopped, or after the client went away, `respond` is a no-op. Must not crash or leak.
    ///
    /// `start` runs on the HTTP thread, like the handler: it hands the work off and returns. While it waits, the
    /// connection still counts against `ConnectionLimits`, and a client that goes away is noticed only once
    /// `respond` comes; so bound the wait (a probe by its timeout). A request whose `respond` never comes holds
    /// its connection until `HTTPServer.stop()`, which answers it 503.
    case deferred(@Sendable (_ respond: @escaping @Sendable (HTTPResponse) -> Void) -> Void)
}
