import Testing

@testable import PGConnCore

/// What every kind of reply means for the session: a table, one row per odd server behaviour.
@Suite struct SessionReplyTests {
    typealias R = QueryResultSummary

    static let one = R(status: .tuples, firstValue: "1")
    static let tail = R(status: .tuples)  // single-row mode ends each statement with an empty result
    static let divisionByZero = R(status: .error, sqlstate: "22012", message: "division by zero")
    static let terminated = R(status: .error, isFatal: true, sqlstate: "57P01", message: "terminating connection")

    struct Row: Sendable, CustomTestStringConvertible {
        var name: String
        var reply: QueryReply
        var roleChecked = false
        var expected: SessionReply.Event
        var testDescription: String { name }
    }

    static let probeRows: [Row] = [
        Row(name: "rows", reply: QueryReply(results: [one, tail]),
            expected: .probeSucceeded(inRecovery: nil, transactionOpen: false)),
        Row(name: "a command", reply: QueryReply(results: [R(status: .command)]),
            expected: .probeSucceeded(inRecovery: nil, transactionOpen: false)),
        Row(name: "BEGIN; SELECT 1 leaves a transaction open", reply: QueryReply(results: [R(status: .command), one, tail], transactionOpen: true),
            expected: .probeSucceeded(inRecovery: nil, transactionOpen: true)),
        Row(name: "the role is the last row with a value", reply: QueryReply(results: [one, tail, R(status: .tuples, firstValue: "t"), tail]),
            roleChecked: true, expected: .probeSucceeded(inRecovery: true, transactionOpen: false)),
        Row(name: "a primary", reply: QueryReply(results: [one, tail, R(status: .tuples, firstValue: "f"), tail]),
            roleChecked: true, expected: .probeSucceeded(inRecovery: false, transactionOpen: false)),
        Row(name: "an error in a transaction", reply: QueryReply(results: [R(status: .command), divisionByZero], transactionOpen: true),
            expected: .probeFailed(Failure(reason: .queryError, sqlstate: "22012", message: "division by zero"), transactionOpen: true)),
        Row(name: "an ERROR whose reason means the end of a session is only a query error (PgBouncer's console)",
            reply: QueryReply(results: [R(status: .error, sqlstate: "08P01", message: "invalid command")]),
            expected: .probeFailed(Failure(reason: .queryError, sqlstate: "08P01", message: "invalid command"), transactionOpen: false)),
        Row(name: "a FATAL ends the session", reply: QueryReply(results: [terminated]),
            expected: .lost(Failure(reason: .adminShutdown, sqlstate: "57P01", message: "terminating connection"))),
        Row(name: "a bad connection with an error",
            reply: QueryReply(results: [R(status: .error, sqlstate: "57P01", message: "terminating connection")], connectionBad: true),
            expected: .lost(Failure(reason: .adminShutdown, sqlstate: "57P01", message: "terminating connection"))),
        Row(name: "a bad connection without a result",
            reply: QueryReply(results: [], connectionBad: true, errorMessage: "server closed the connection unexpectedly"),
            expected: .lost(Failure(reason: .connectionLost, message: "server closed the connection unexpectedly"))),
        Row(name: "COPY discards the connection", reply: QueryReply(results: [R(status: .unexpected("PGRES_COPY_OUT"))]),
            expected: .lost(Failure(reason: .queryError, message: "unexpected reply PGRES_COPY_OUT (COPY is not a probe); the connection is discarded"))),
        Row(name: "a huge reply discards the connection", reply: QueryReply(results: [one], overLimit: "more than 1000 results"),
            expected: .lost(Failure(reason: .queryError, message: "reply too large (more than 1000 results); the connection is discarded"))),
    ]

    @Test(arguments: probeRows)
    func probeReplies(row: Row) {
        #expect(SessionReply.probe(row.reply, roleChecked: row.roleChecked) == row.expected)
    }

    @Test func factsReplies() {
        let facts = QueryReply(results: [R(status: .tuples, firstValue: "f", secondValue: "1699000000.5")], serverVersion: "15.18")
        #expect(SessionReply.facts(facts) == .facts(ServerFacts(version: "15.18", inRecovery: false, startTime: 1_699_000_000.5)))
        let console = QueryReply(results: [R(status: .error, sqlstate: "08P01", message: "invalid command")])
        #expect(SessionReply.facts(console) == .facts(nil), "a pooler's console: facts unknown, session fine")
        let fatal = QueryReply(results: [Self.terminated])
        #expect(SessionReply.facts(fatal) == .lost(Failure(reason: .adminShutdown, sqlstate: "57P01", message: "terminating connection")))
    }

    @Test func rollbackReplies() {
        #expect(SessionReply.rollback(QueryReply(results: [R(status: .command)])) == .rolledBack)
        let stillOpen = QueryReply(results: [R(status: .command)], transactionOpen: true)
        #expect(SessionReply.rollback(stillOpen) == .lost(Failure(reason: .queryError, message: "still in a transaction after ROLLBACK")))
    }

    @Test func limits() {
        #expect(SessionReply.limits.exceeded(results: 1000, bytes: 1 << 20) == nil)
        #expect(SessionReply.limits.exceeded(results: 1001, bytes: 0) == "more than 1000 results")
        #expect(SessionReply.limits.exceeded(results: 1, bytes: (1 << 20) + 1) == "more than 1048576 bytes")
    }

    /// `SELECT 1 -- comment` with `expect: primary` failed every probe when the role query was appended after the comment.
    @Test(arguments: ["SELECT 1 -- comment", "SELECT 1;", "SELECT 1", "SELECT 1 -- ; comment;"])
    func theRoleQueryStandsOnItsOwnLine(query: String) {
        var config = SessionStateMachineTests.config
        config.query = query
        config.expect = .primary
        let sql = SessionQueries.probe(for: config)
        #expect(sql == query + "\n;\nSELECT pg_catalog.pg_is_in_recovery()")
        config.expect = .any
        #expect(SessionQueries.probe(for: config) == query)
    }
}
