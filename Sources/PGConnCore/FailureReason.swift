/// Why a connection attempt, probe or login check failed, or why a session was lost.
///
/// A small bounded set so that `reason` labels never explode. Derived from the SQLSTATE when the
/// server sent one, from the libpq/socket error text otherwise (see ``FailureClassifier``).
/// docs/reasons.md documents every case (SQLSTATEs, libpq texts, what to check); keep the two in step.
public enum FailureReason: String, CaseIterable, Sendable, Hashable, Codable {
    /// TCP connection refused: nothing listens on the port.
    case refused
    /// No answer within `connect_timeout` / `probe_timeout`, or TCP keepalive / user timeout expired.
    case timeout
    /// The host name does not resolve.
    case dns
    /// Other socket-level errors: unreachable network or host, reset by peer, broken pipe.
    case network
    /// TLS handshake or certificate failure, or the server refused TLS that `sslmode` requires.
    case tls
    /// Authentication rejected (SQLSTATE class 28), including `pg_hba.conf` rejections.
    case auth
    /// The exporter had no password to send: `password_file` unreadable or `password_env` unset. Nothing reached
    /// the server (so no account can lock); unlike `auth`, the fix is on the exporter's host.
    case passwordUnavailable = "password_unavailable"
    /// The database does not exist (3D000).
    case databaseMissing = "database_missing"
    /// `max_connections` or a role/database connection limit reached (53300).
    case tooManyConnections = "too_many_connections"
    /// The server is starting up, shutting down or in recovery and not accepting connections (57P03).
    case startingUp = "starting_up"
    /// The backend was terminated by an administrator (`pg_terminate_backend`) or a shutdown of any mode (57P01).
    case adminShutdown = "admin_shutdown"
    /// The backend was terminated because another backend crashed (57P02). An immediate shutdown sends 57P01.
    case crashShutdown = "crash_shutdown"
    /// The server closed an idle session (57P05 idle_session_timeout, 25P03 idle_in_transaction).
    case idleTimeout = "idle_timeout"
    /// The server closed the connection without saying why.
    case connectionLost = "connection_lost"
    /// The probe query itself failed on a working connection.
    case queryError = "query_error"
    /// The server is in the wrong role: in recovery when `expect: primary` (or the reverse), or 25006.
    case readOnly = "read_only"
    /// A standby replays further behind than the target's `max_replay_lag`: its data is too old to read from.
    case replicationLag = "replication_lag"
    /// Anything else.
    case other
}

/// One classified failure: the bounded reason for metrics, the details for logs.
public struct Failure: Error, Sendable, Equatable, CustomStringConvertible {
    public var reason: FailureReason
    /// The five-character SQLSTATE the server sent, if any.
    public var sqlstate: String?
    /// A one-line human message (libpq's or the server's), never containing a password.
    public var message: String

    public init(reason: FailureReason, sqlstate: String? = nil, message: String) {
        self.reason = reason
        self.sqlstate = sqlstate
        self.message = message
    }

    public var description: String {
        if let sqlstate { return "\(reason.rawValue) (\(sqlstate)): \(message)" }
        return "\(reason.rawValue): \(message)"
    }
}
