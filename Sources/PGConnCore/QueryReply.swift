/// One result of a query, copied out of libpq (or a fake) so the result itself can be freed at once.
public struct QueryResultSummary: Sendable, Equatable {
    public enum Status: Sendable, Equatable {
        /// Rows (`PGRES_TUPLES_OK`, or one row in single-row mode).
        case tuples
        /// A command without rows, or an empty query.
        case command
        case error
        /// A status a probe must never produce (COPY in or out, a pipeline sync, anything unknown), by libpq's name.
        case unexpected(String)
    }

    public var status: Status
    /// FATAL or PANIC: the server ends the session after this error.
    public var isFatal: Bool
    public var sqlstate: String?
    public var message: String
    /// The first and second column of the first row, if the result has them.
    public var firstValue: String?
    public var secondValue: String?

    public init(
        status: Status, isFatal: Bool = false, sqlstate: String? = nil, message: String = "", firstValue: String? = nil,
        secondValue: String? = nil
    ) {
        self.status = status
        self.isFatal = isFatal
        self.sqlstate = sqlstate
        self.message = message
        self.firstValue = firstValue
        self.secondValue = secondValue
    }

    public var succeeded: Bool { status == .tuples || status == .command }
}

extension QueryResultSummary.Status {
    public var isUnexpected: Bool {
        if case .unexpected = self { true } else { false }
    }
}

/// Everything the session learnt from one query: its results and the state the connection was left in.
///
/// A plain value built by the I/O edge, so that what a reply means (``SessionReply``) is a pure function.
public struct QueryReply: Sendable, Equatable {
    public var results: [QueryResultSummary]
    /// libpq considers the connection broken (`CONNECTION_BAD`).
    public var connectionBad: Bool
    /// libpq's error text when the connection is bad.
    public var errorMessage: String
    /// The session was left inside a transaction block (open or aborted).
    public var transactionOpen: Bool
    /// The `server_version` parameter the server reported at startup.
    public var serverVersion: String?
    /// Set when the reply was cut off because it broke ``SessionReply/limits``: too many results or bytes.
    public var overLimit: String?

    public init(
        results: [QueryResultSummary], connectionBad: Bool = false, errorMessage: String = "",
        transactionOpen: Bool = false, serverVersion: String? = nil, overLimit: String? = nil
    ) {
        self.results = results
        self.connectionBad = connectionBad
        self.errorMessage = errorMessage
        self.transactionOpen = transactionOpen
        self.serverVersion = serverVersion
        self.overLimit = overLimit
    }
}

/// What a session query's reply means for the session: the event to feed ``SessionStateMachine``.
///
/// Pure, so every odd reply (a FATAL, a pooler's console, a COPY, a huge result, a lost connection) is a table
/// test rather than a fault to stage.
public enum SessionReply {
    /// The bounds on what one probe may bring back; past them the reply is cut off and the connection discarded,
    /// since the rest of it would still be on the wire.
    public struct Limits: Sendable, Equatable {
        public var results: Int
        public var bytes: Int

        /// Which limit a reply of this size breaks, as a phrase for the failure message; `nil` within both.
        public func exceeded(results count: Int, bytes size: Int) -> String? {
            if count > results { return "more than \(results) results" }
            if size > bytes { return "more than \(bytes) bytes" }
            return nil
        }
    }

    /// 1,000 results (rows, in single-row mode) and 1 MiB of values per probe: far above any sensible health
    /// query, far below what could hurt the exporter.
    public static let limits = Limits(results: 1000, bytes: 1 << 20)

    /// What the session machine must be told.
    public enum Event: Sendable, Equatable {
        /// The connection cannot go on: report ``SessionStateMachine/connectionLost(_:now:)``.
        case lost(Failure)
        /// The facts query finished; `nil` when the server could not answer it (a pooler's console).
        case facts(ServerFacts?)
        /// `replayLag`: seconds a standby replays behind, when the probe asked (`expect: standby`).
        case probeSucceeded(inRecovery: Bool?, transactionOpen: Bool, replayLag: Double? = nil)
        case probeFailed(Failure, transactionOpen: Bool)
        /// The `ROLLBACK` after a probe left no transaction open.
        case rolledBack
    }

    /// Reasons that describe the end of a session; an ERROR (not FATAL) with one of them on a connection that
    /// goes on is counted as a query error (PgBouncer's console answers an unknown command with 08P01).
    static let sessionEndingReasons: Set<FailureReason> = [
        .adminShutdown, .crashShutdown, .idleTimeout, .connectionLost, .network,
    ]

    /// The reply to the server-facts query (``SessionQueries/facts``).
    public static func facts(_ reply: QueryReply) -> Event {
        if let lost = lostConnection(reply) { return .lost(lost) }
        // An ERROR here (a pooler's console, a missing function) only means the facts are unknown.
        var facts = ServerFacts(version: reply.serverVersion)
        if let row = reply.results.first, row.status == .tuples {
            facts.inRecovery = row.firstValue.map { $0 == "t" }
            facts.startTime = row.secondValue.flatMap(Double.init)
        }
        let empty = facts.version == nil && facts.inRecovery == nil && facts.startTime == nil
        return .facts(empty ? nil : facts)
    }

    /// The reply to a probe. With `roleChecked`, the last result is the role query's (``SessionQueries/probe``).
    public static func probe(_ reply: QueryReply, roleChecked: Bool) -> Event {
        if let lost = lostConnection(reply) { return .lost(lost) }
        if let failed = reply.results.first(where: { !$0.succeeded }) {
            var failure = FailureClassifier.classify(sqlstate: failed.sqlstate, message: failed.message)
            if sessionEndingReasons.contains(failure.reason) { failure.reason = .queryError }
            return .probeFailed(failure, transactionOpen: reply.transactionOpen)
        }
        // In single-row mode each row is a result of its own, and each statement ends with an empty one: the
        // role is the last row that has a value.
        let roleRow = roleChecked ? reply.results.last(where: { $0.firstValue != nil }) : nil
        let inRecovery = roleRow?.firstValue.map { $0 == "t" }
        return .probeSucceeded(
            inRecovery: inRecovery, transactionOpen: reply.transactionOpen,
            replayLag: roleRow?.secondValue.flatMap(Double.init))
    }

    /// The reply to the `ROLLBACK` after a probe; a session still in a transaction after it cannot be trusted.
    public static func rollback(_ reply: QueryReply) -> Event {
        if let lost = lostConnection(reply) { return .lost(lost) }
        if let failed = reply.results.first(where: { !$0.succeeded }) {
            return .lost(FailureClassifier.classify(sqlstate: failed.sqlstate, message: failed.message))
        }
        if reply.transactionOpen {
            return .lost(Failure(reason: .queryError, message: "still in a transaction after ROLLBACK"))
        }
        return .rolledBack
    }

    /// Why the connection must be discarded, or `nil` when it can go on.
    public static func lostConnection(_ reply: QueryReply) -> Failure? {
        if let limit = reply.overLimit {
            return Failure(reason: .queryError, message: "reply too large (\(limit)); the connection is discarded")
        }
        if case .unexpected(let name)? = reply.results.first(where: \.status.isUnexpected)?.status {
            return Failure(
                reason: .queryError,
                message: "unexpected reply \(name) (COPY is not a probe); the connection is discarded")
        }
        if let fatal = reply.results.first(where: \.isFatal) {
            return FailureClassifier.classify(sqlstate: fatal.sqlstate, message: fatal.message)
        }
        guard reply.connectionBad else { return nil }
        if let failed = reply.results.first(where: { !$0.succeeded }) {
            return FailureClassifier.classify(sqlstate: failed.sqlstate, message: failed.message)
        }
        return FailureClassifier.classify(sqlstate: nil, message: reply.errorMessage)
    }
}

/// The SQL the session sends besides the user's query.
public enum SessionQueries {
    /// Read once per connection; poolers that cannot answer it just leave the facts out.
    public static let facts =
        "SELECT pg_catalog.pg_is_in_recovery(), extract(epoch FROM pg_catalog.pg_postmaster_start_time())::float8"

    /// Ends a transaction that a probe left open, so the session never sits idle in a transaction.
    public static let rollback = "ROLLBACK"

    /// The configured query, plus the role check when the target expects a role.
    ///
    /// The role query goes on a line of its own after a `;` on a line of its own, so a trailing `-- comment`
    /// or a missing or present final `;` in the user's query cannot swallow it (an empty statement is allowed).
    public static func probe(for config: TargetConfig) -> String {
        switch config.expect {
        case .any: config.query
        case .primary: config.query + "\n;\nSELECT pg_catalog.pg_is_in_recovery()"
        case .standby: config.query + "\n;\n" + standbyRoleAndLag
        }
    }

    /// The role, and how many seconds the standby's replay is behind: 0 when it has replayed all it received
    /// (an idle primary sends nothing, and a timestamp-only lag would grow for ever), else the age of the last
    /// replayed transaction. NULL on a primary.
    public static let standbyRoleAndLag =
        "SELECT pg_catalog.pg_is_in_recovery(), CASE WHEN pg_catalog.pg_last_wal_receive_lsn() "
        + "= pg_catalog.pg_last_wal_replay_lsn() THEN 0 ELSE extract(epoch FROM now() "
        + "- pg_catalog.pg_last_xact_replay_timestamp()) END::float8"
}
