#if canImport(Glibc)
import Glibc
#endif

/// How many connections the HTTP server holds, from whom and for how long, so one client cannot shut out
/// the scrapes.
///
/// libmicrohttpd enforces `total`, `perAddress` and `idleTimeout`; `requestDeadline` is the server's own
/// (see `RequestDeadlines`), because 0.9.75 restarts the idle timeout on every byte received and so never
/// closes a client that trickles a request one byte at a time.
public struct ConnectionLimits: Equatable, Sendable {
    /// Connections open at once. At the limit libmicrohttpd stops accepting: new connections wait in the
    /// kernel's listen backlog until a slot frees (they are not refused).
    public var total: Int
    /// Connections open at once from one client address: one IPv4 address, or one whole IPv6 address (/128;
    /// IPv4 clients of a dual-stack listener count by their mapped address, so still per IPv4 address). The
    /// connection past it is closed right after accept(2).
    public var perAddress: Int
    /// A connection that receives and sends nothing for this long is closed. libmicrohttpd counts whole
    /// seconds; the value is rounded up to at least 1 s.
    public var idleTimeout: Duration
    /// A request must arrive in full, headers and body, within this long of the connection opening or of the
    /// previous response; else the server shuts the connection down (checked every 0.5 s).
    public var requestDeadline: Duration

    public init(total: Int, perAddress: Int, idleTimeout: Duration, requestDeadline: Duration) {
        self.total = total
        self.perAddress = perAddress
        self.idleTimeout = idleTimeout
        self.requestDeadline = requestDeadline
    }

    /// The limits for a process that may open `openFileLimit` descriptors (the RLIMIT_NOFILE soft limit).
    ///
    /// - `total = min(1024, max(16, openFileLimit / 4))`: a quarter of the descriptors, so three quarters stay
    ///   for the database connections (up to two per target), the log and the event loop. 1024 is plenty for
    ///   a handful of scrapers and health checkers, and bounds memory: each connection may hold a 32 KiB
    ///   libmicrohttpd buffer (32 MiB at most). 16 keeps the server usable under a tiny limit.
    /// - `perAddress = min(64, total / 4)`: far above what Prometheus or a load balancer's health checks use
    ///   (one or a few connections each), yet at least four addresses must collude to fill every slot.
    /// - `idleTimeout` 10 s and `requestDeadline` 10 s: a scrape request is a few hundred bytes; a client that
    ///   cannot send it in 10 s (or 1 MiB of body at 100 KiB/s) is treated as abusive. Prometheus reconnects
    ///   when a kept-alive connection was closed between scrapes.
    public static func sized(openFileLimit: Int) -> ConnectionLimits {
        let total = min(1024, max(16, openFileLimit / 4))
        return ConnectionLimits(
            total: total,
            perAddress: min(64, total / 4),
            idleTimeout: .seconds(10),
            requestDeadline: .seconds(10)
        )
    }

    /// `sized(openFileLimit:)` for this process's current RLIMIT_NOFILE soft limit (1024 when unreadable).
    ///
    /// Read when the server starts, so after the executable has raised the soft limit to the hard limit.
    public static func forThisProcess() -> ConnectionLimits {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return sized(openFileLimit: 1024) }
        return sized(openFileLimit: Int(clamping: limit.rlim_cur))
    }

    /// `idleTimeout` in whole seconds as libmicrohttpd takes it: rounded up, at least 1 (0 would mean none).
    var idleTimeoutSeconds: Int {
        let (seconds, attoseconds) = idleTimeout.components
        return max(1, Int(seconds) + (attoseconds > 0 ? 1 : 0))
    }
}
