/// The requests whose handler deferred its answer, from the suspension until libmicrohttpd reports them
/// completed, keyed by a ticket.
///
/// Each request gets a ticket that is never reused, and `respond` carries the ticket, not the connection. A
/// `respond` that comes late (a second call, after the response was sent or the client went away, or one of an
/// earlier request on the same kept-alive connection) finds no waiting entry and does nothing, so it never
/// resumes a connection that libmicrohttpd has moved on with or freed: libmicrohttpd frees a connection only
/// after the request-completed callback, which removes its entry first.
///
/// An entry goes `waiting` (suspended) → `answered` (resume asked for; the response waits here) → `sending` (the
/// access handler queued it) → removed at completion. Only a `waiting` request's connection is handed out to be
/// resumed, once. The server keeps the value under a lock and calls `MHD_suspend_connection` and
/// `MHD_resume_connection` only while holding it, so a resume cannot overtake its suspension, and `stop()` can
/// close the table (`stop(answering:)`) before `MHD_stop_daemon` runs, which libmicrohttpd 0.9.75 requires:
/// it aborts the process if a connection is still suspended and not being resumed when the daemon stops.
///
/// A pure value: `Connection` is libmicrohttpd's connection pointer in the server, anything in tests.
struct SuspendedRequests<Connection> {
    typealias Ticket = UInt64

    private enum Stage {
        case waiting
        case answered(HTTPResponse)
        case sending
    }

    private struct Entry {
        var connection: Connection
        var stage: Stage
    }

    private var entries: [Ticket: Entry] = [:]
    private var nextTicket: Ticket = 1
    /// Set by `stop(answering:)`; from then on nothing is suspended and no `respond` is taken.
    private(set) var isStopping = false

    /// Deferred requests not yet completed, whatever their stage.
    var count: Int { entries.count }

    /// A handler deferred its answer: the ticket for its `respond`, and the caller suspends the connection
    /// before it releases the lock. Nil when the server is stopping: the caller answers at once instead.
    mutating func suspend(_ connection: Connection) -> Ticket? {
        guard !isStopping else { return nil }
        let ticket = nextTicket
        nextTicket += 1
        entries[ticket] = Entry(connection: connection, stage: .waiting)
        return ticket
    }

    /// `respond` was called: the connection to resume (the caller does so before it releases the lock), or
    /// nil when the request is not waiting any more (answered, completed, unknown) or the server is stopping.
    mutating func answer(_ ticket: Ticket, with response: HTTPResponse) -> Connection? {
        guard !isStopping, let entry = entries[ticket], case .waiting = entry.stage else { return nil }
        entries[ticket]?.stage = .answered(response)
        return entry.connection
    }

    /// The access handler runs again after the resume: the response to queue, handed out once.
    mutating func take(_ ticket: Ticket) -> HTTPResponse? {
        guard let entry = entries[ticket], case .answered(let response) = entry.stage else { return nil }
        entries[ticket]?.stage = .sending
        return response
    }

    /// libmicrohttpd reports the request completed (sent, failed, or closed at shutdown): forget it. True when
    /// it was the last one while stopping, so a `stop()` waiting for the answers to go out may go on.
    mutating func completed(_ ticket: Ticket) -> Bool {
        guard entries.removeValue(forKey: ticket) != nil else { return false }
        return isStopping && entries.isEmpty
    }

    /// The server stops: nothing is suspended from now on and every waiting request is answered `response`.
    /// Returns their connections, which the caller resumes before it releases the lock.
    mutating func stop(answering response: HTTPResponse) -> [Connection] {
        isStopping = true
        var resumed: [Connection] = []
        for (ticket, entry) in entries {
            guard case .waiting = entry.stage else { continue }
            entries[ticket]?.stage = .answered(response)
            resumed.append(entry.connection)
        }
        return resumed
    }
}
