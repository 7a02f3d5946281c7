import PGConnCore
import Testing

@testable import PGConnPostgres

@Suite struct DSNParserTests {
    @Test(arguments: [
        (
            "postgresql://monitor:s3cret@db1:6432/app?sslmode=verify-full",
            DSNSummary(host: "db1", port: "6432", database: "app", user: "monitor", sslmode: "verify-full")
        ),
        (
            "host=10.0.0.5 user=alice dbname=postgres",
            DSNSummary(host: "10.0.0.5", port: "5432", database: "postgres", user: "alice", sslmode: "prefer")
        ),
        ("user=bob", DSNSummary(host: "localhost", port: "5432", database: "bob", user: "bob", sslmode: "prefer")),
        (
            "host=a,b port=1,2 user=u",
            DSNSummary(host: "a,b", port: "1,2", database: "u", user: "u", sslmode: "prefer")
        ),
    ])
    func summarisesWithoutThePassword(dsn: String, expected: DSNSummary) throws {
        #expect(try DSNParser.parse(dsn).get() == expected)
    }

    @Test(arguments: [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("host=db bogus=1", #"invalid connection option "bogus""#),
        ("postgresql://u:s3cret@[::1/x", #"end of string reached when looking for matching "]" in IPv6 host address in URI"#),
        ("postgresql://u:s3cret@db/x?bogus=1", #"invalid URI query parameter: "bogus""#),
        ("host=db s3cret", #"missing "=" after "..." in connection info string"#),
    ])
    func rejectsWhatLibpqRejects(dsn: String, message: String) {
        guard case .failure(let error) = DSNParser.parse(dsn) else {
            Issue.record("\(dsn) was accepted")
            return
        }
        #expect(error.message == message)
        #expect(!error.message.contains("s3cret"))
    }
}
