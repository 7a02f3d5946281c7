import PGConnCore

/// When each open connection must have delivered its current request, keyed by the connection.
///
/// libmicrohttpd 0.9.75 restarts a connection's idle timeout on every byte it receives, so a client that
/// sends one byte every few seconds would hold its connection (and a per-address slot) for ever. This table
/// gives every request a deadline instead: it starts when the connection opens and again when a response has
/// been sent (the next request on a kept-alive connection), and is cleared once the request is in and being
/// answered (sending the response is bounded by the idle timeout). `expire(now:)` hands back the sockets
/// past their deadline, each once, for the caller to shut down.
///
/// A pure value: the server keeps it under a lock and passes `now` in.
struct RequestDeadlines<Key: Hashable> {
    private struct Entry {
        var socket: Int32
        var deadline: MonotonicInstant?
    }

    let limit: Duration
    private var entries: [Key: Entry] = [:]

    init(limit: Duration) {
        self.limit = limit
    }

    /// Connections being tracked.
    var count: Int { entries.count }

    /// A connection opened: its first request is due `limit` from now.
    mutating func opened(_ key: Key, socket: Int32, now: MonotonicInstant) {
        entries[key] = Entry(socket: socket, deadline: now + limit)
    }

    /// The request is in (headers and body) and is being answered: no deadline until the response is sent.
    mutating func answering(_ key: Key) {
        entries[key]?.deadline = nil
    }

    /// The response was sent (or the request ended otherwise): a next request on the same connection is due
    /// `limit` from now. Unknown connections (already closed) stay unknown.
    mutating func completed(_ key: Key, now: MonotonicInstant) {
        entries[key]?.deadline = now + limit
    }

    /// The connection is closed: forget it.
    mutating func closed(_ key: Key) {
        entries[key] = nil
    }

    /// The sockets of connections whose deadline has passed; each is returned once (its deadline is cleared).
    mutating func expire(now: MonotonicInstant) -> [Int32] {
        var expired: [Int32] = []
        for (key, entry) in entries {
            guard let deadline = entry.deadline, deadline <= now else { continue }
            expired.append(entry.socket)
            entries[key]?.deadline = nil
        }
        return expired
    }
}
