import Testing

@testable import PGConnCore

@Suite("ProbeAllowRule")
struct ProbeAllowRuleTests {
    private static func rule(_ text: String) throws -> ProbeAllowRule {
        try ProbeAllowRule.parse(text).get()
    }

    private static func address(_ text: String) throws -> ProbeAddress {
        try ProbeAddress.parse(text).get()
    }

    @Test("an entry is a network when it has / or :, or is digits and dots; a glob otherwise")
    func classification() throws {
        #expect(try Self.rule("db-*.prod.example.com") == .host("db-*.prod.example.com"))
        #expect(try Self.rule("DB?.Example.COM") == .host("db?.example.com"))
        #expect(try Self.rule("localhost") == .host("localhost"))
        #expect(try Self.rule("*") == .host("*"))
        #expect(try Self.rule("*.*") == .host("*.*"))
        #expect(try Self.rule("db-1?.10.*.example.com") == .host("db-1?.10.*.example.com"))
        #expect(try Self.rule("10.0.0.0/8") == .network(IPNetwork.parse("10.0.0.0/8").get()))
        #expect(try Self.rule("127.0.0.1").description == "127.0.0.1/32")
        #expect(try Self.rule("::1").description == "::1/128")
        #expect(try Self.rule("::/0").description == "::/0")
        #expect(try Self.rule("0.0.0.0/0").description == "0.0.0.0/0")
    }

    static let invalid: [(String, String)] = [
        ("", "must not be empty"),
        ("10.0.0.256", "not a valid IPv4 address"),
        ("10.0.0", "not a valid IPv4 address"),
        ("2130706433", "not a valid IPv4 address"),
        ("db1:5432", "an allow entry names a host without a port (list ports under ports)"),
        ("*.example.com:5432", "an allow entry names a host without a port (list ports under ports)"),
        ("fe80::1::2", "not a valid IPv6 address"),
        ("[::1]", "write an IPv6 address without brackets"),
        ("db_*.prod example", #"a host glob may only contain letters, digits, ".", "-", "_", "*" and "?""#),
        ("db[0-9].example", #"a host name may only contain letters, digits, ".", "-" and "_""#),
        ("db[0-9]*", #"a host glob may only contain letters, digits, ".", "-", "_", "*" and "?""#),
        ("db,*", #"a host glob may only contain letters, digits, ".", "-", "_", "*" and "?""#),
        ("db..example.com", #"a host name must not have an empty label (".." or a leading ".")"#),
        ("-db1", #"a host must not start with "-""#),
        ("0x7f.0.0.1", "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"),
        (String(repeating: "*", count: 254), "a host glob must be at most 253 characters (got 254)"),
        // It would allow `10.0.0.evil.example` too, whose DNS its owner controls.
        ("10.0.0.*", ipRangeGlob),
        ("10.?.0.1", ipRangeGlob),
        ("*.0.0.1", ipRangeGlob),
        ("1*", ipRangeGlob),
    ]

    static let ipRangeGlob =
        "an IP range as a glob also matches host names (10.0.0.* matches 10.0.0.evil.example): "
        + "use a CIDR such as 10.0.0.0/24"

    @Test("rejects entries that are neither a network nor a glob that could match", arguments: invalid)
    func rejects(text: String, problem: String) {
        #expect(ProbeAllowRule.parse(text) == .failure(AllowRuleError(problem)))
    }

    static let globs: [(glob: String, host: String, matches: Bool)] = [
        ("*.prod.example.com", "db1.prod.example.com", true),
        // `*` spans dots.
        ("*.prod.example.com", "a.b.prod.example.com", true),
        ("*.prod.example.com", "prod.example.com", false),
        ("*.prod.example.com", "db1.prod.example.com.evil.net", false),
        ("*.prod.example.com", "db1.prod.example.comx", false),
        ("*.prod.example.com", "db1-prod.example.com", false),
        ("db-*", "db-", true),
        ("db-*", "db-1.eu", true),
        ("db-*", "xdb-1", false),
        ("db?", "db1", true),
        ("db?", "db", false),
        ("db?", "db12", false),
        ("db?.example.com", "db..example.com", true),
        ("??*", "a", false),
        ("??*", "ab", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "abc", true),
        ("a*b*c", "acb", false),
        ("*ab", "aab", true),
        ("*a*a", "banana", true),
        ("*a*a", "banan", false),
        ("a*a", "a", false),
        ("localhost", "localhost", true),
        ("localhost", "localhost.", false),
        // Case-insensitive both ways.
        ("DB?.Example.COM", "db7.example.com", true),
        ("db?.example.com", "DB7.EXAMPLE.COM", true),
        // Against the host text: IP literals as written.
        ("*", "10.0.0.1", true),
        ("*", "::1", true),
        ("*.*", "10.0.0.7", true),
        ("db*", "10.0.0.7", false),
        ("*.example.com", "::1", false),
    ]

    @Test("host globs: * any run (dots too), ? one character, case-insensitive", arguments: globs)
    func glob(glob: String, host: String, matches: Bool) throws {
        // Built directly: some hosts here (upper case) are what a caller might pass, not what parse returns.
        #expect(try Self.rule(glob).matches(ProbeAddress(host: host, port: 5432)) == matches)
    }

    @Test("a network never matches a host name, even one that resolves into it")
    func namesNeverMatchNetworks() throws {
        for network in ["0.0.0.0/0", "::/0", "127.0.0.1", "10.0.0.0/8"] {
            let rule = try Self.rule(network)
            #expect(!rule.matches(try Self.address("localhost")))
            #expect(!rule.matches(try Self.address("10.0.0.1.nip.io")))
            #expect(!rule.matches(try Self.address("db1")))
        }
        #expect(try Self.rule("0.0.0.0/0").matches(Self.address("10.0.0.1:6432")))
        #expect(try Self.rule("::/0").matches(Self.address("[2001:db8::1]")))
        #expect(try Self.rule("::1").matches(Self.address("[0:0:0:0:0:0:0:1]")))
        #expect(try !Self.rule("::1").matches(Self.address("[::2]")))
        #expect(try Self.rule("10.0.0.0/8").matches(Self.address("[::ffff:10.9.9.9]")))
    }
}
