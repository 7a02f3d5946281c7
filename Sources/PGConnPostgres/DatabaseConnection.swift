package import PGConnCore

/// What `PQconnectPoll` asks for next.
package enum ConnectPollStatus: Equatable, Sendable {
    case wantRead
    case wantWrite
    case ready
    case failed(Failure)
}

/// The seam between the monitor and one database connection: what the loop needs of libpq, and no more.
///
/// ``PostgresConnection`` implements it with libpq; tests implement it with a scripted fake over a socket pair,
/// so admission, resets, result handling and lookups run without a server. Every call must return at once:
/// the caller waits on ``socket`` (epoll) between calls. Used only on the monitor's I/O thread.
package protocol DatabaseConnection: AnyObject {
    /// The socket to wait on; it can change while connecting, so the loop reads it after every poll. -1 if none.
    var socket: Int32 { get }
    /// Advances the connect; called when the socket is ready for what the last status asked.
    func poll() -> ConnectPollStatus
    /// Sends a simple-protocol query; with `singleRow`, rows come back one result each. False when broken.
    func sendQuery(_ sql: String, singleRow: Bool) -> Bool
    /// Sends what is buffered: `true` when all is sent, `false` when the socket must become writable first.
    func flush() -> Result<Bool, Failure>
    /// Reads what the socket has; a failure means the connection is gone.
    func consumeInput() -> Failure?
    /// True while a result is still being received.
    var isBusy: Bool { get }
    /// The next finished result and the bytes of its values, or `nil` when the query is complete.
    func nextResult() -> (result: QueryResultSummary, bytes: Int)?
    var isBad: Bool { get }
    /// Inside a transaction block (open or aborted) after the last query.
    var isInTransaction: Bool { get }
    /// A parameter the server reported, such as `server_version`.
    func parameterStatus(_ name: String) -> String?
    /// libpq's current error message, trimmed.
    var errorMessage: String { get }
    /// Which server an established connection reached, and its TLS details; `nil` when unknown.
    var details: ConnectionDetails? { get }
    /// What it takes to cancel the running query from another thread; `nil` if the server gave no key.
    func makeCanceller() -> (any QueryCanceller)?
    /// Closes the connection without blocking. Idempotent.
    func close()
}

extension DatabaseConnection {
    package var details: ConnectionDetails? { nil }
}

/// Cancels one running query. ``cancel()`` blocks (it opens a connection of its own), so it runs on a worker.
package protocol QueryCanceller: Sendable {
    /// Sends the cancel request; returns libpq's error text if it could not be sent.
    func cancel() -> String?
}

/// Starts connections: ``PostgresConnection/start(dsn:overrides:)`` in production, a scripted fake in tests.
package protocol ConnectionFactory: Sendable {
    /// Starts a non-blocking connect. Must not block: every host name is already resolved in `overrides`.
    func start(dsn: String, overrides: [(String, String)]) -> Result<any DatabaseConnection, Failure>
}

/// The blocking work the monitor hands to worker threads, injectable so tests can stall or fail it.
package struct MonitorEnvironment: Sendable {
    package var connections: any ConnectionFactory
    /// Resolves one host name to one numeric address (`getaddrinfo`; blocks).
    package var lookUp: @Sendable (String) -> Result<String, Failure>
    /// Reads a password source (a file read blocks).
    package var readPassword: @Sendable (PasswordSource) -> Result<String?, Failure>
    /// Whether a server's port accepts a connection (``Endpoint/accepts(_:timeout:)``; blocks up to its timeout).
    package var accepts: @Sendable (Endpoint) -> Bool

    package init(
        connections: any ConnectionFactory,
        lookUp: @escaping @Sendable (String) -> Result<String, Failure>,
        readPassword: @escaping @Sendable (PasswordSource) -> Result<String?, Failure>,
        accepts: @escaping @Sendable (Endpoint) -> Bool = { Endpoint.accepts($0, timeout: .milliseconds(500)) }
    ) {
        self.connections = connections
        self.lookUp = lookUp
        self.readPassword = readPassword
        self.accepts = accepts
    }

    /// libpq, the system resolver and the file system.
    package static var live: MonitorEnvironment {
        MonitorEnvironment(
            connections: LibPQConnectionFactory(), lookUp: HostResolver.lookUp,
            readPassword: ConnectionParameters.readPassword)
    }
}

struct LibPQConnectionFactory: ConnectionFactory {
    func start(dsn: String, overrides: [(String, String)]) -> Result<any DatabaseConnection, Failure> {
        PostgresConnection.start(dsn: dsn, overrides: overrides).map { $0 }
    }
}
