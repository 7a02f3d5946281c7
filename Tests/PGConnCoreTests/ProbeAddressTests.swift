import Testing

@testable import PGConnCore

@Suite("ProbeAddress.parse")
struct ProbeAddressTests {
    static let valid: [(text: String, host: String, port: Int)] = [
        ("db1", "db1", 5432),
        ("DB1.Example.COM:6432", "db1.example.com", 6432),
        ("db_1.internal.", "db_1.internal.", 5432),
        ("pg-2.eu-west-1.rds.amazonaws.com", "pg-2.eu-west-1.rds.amazonaws.com", 5432),
        ("localhost:05432", "localhost", 5432),
        ("10.0.0.1", "10.0.0.1", 5432),
        ("10.0.0.1:1", "10.0.0.1", 1),
        ("0.0.0.0:65535", "0.0.0.0", 65535),
        ("255.255.255.255", "255.255.255.255", 5432),
        ("[::1]", "::1", 5432),
        ("[::1]:6432", "::1", 6432),
        ("[FE80::1]", "fe80::1", 5432),
        ("[::ffff:10.0.0.1]:5433", "::ffff:10.0.0.1", 5433),
        ("[2001:db8:0:0:0:0:0:1]", "2001:db8:0:0:0:0:0:1", 5432),
        ("db1.example.com.internal-eu", "db1.example.com.internal-eu", 5432),
        // A name whose last label is not a number is a name, even if it starts with digits.
        ("1e100.net", "1e100.net", 5432),
        ("4chan.example.3com", "4chan.example.3com", 5432),
    ]

    @Test("accepts host, host:port, [ipv6] and [ipv6]:port", arguments: valid)
    func parses(text: String, host: String, port: Int) throws {
        let address = try ProbeAddress.parse(text).get()
        #expect(address == ProbeAddress(host: host, port: port))
    }

    @Test("a host name of 253 characters with labels of 63 is accepted")
    func longestName() throws {
        let label = String(repeating: "a", count: 63)
        let name = [label, label, label, String(repeating: "b", count: 61)].joined(separator: ".")
        #expect(name.count == 253)
        #expect(try ProbeAddress.parse(name).get().host == name)
    }

    static let invalid: [(text: String, problem: String)] = [
        ("", "must not be empty (give host or host:port)"),
        ("postgres://db1", "give host or host:port, not a URL"),
        ("postgresql://monitor@db1:5432/postgres", "give host or host:port, not a URL"),
        ("db 1", "must not contain spaces or control characters"),
        ("db1\t", "must not contain spaces or control characters"),
        ("db1\n:5432", "must not contain spaces or control characters"),
        ("db1\u{7f}", "must not contain spaces or control characters"),
        ("db1\u{85}", "must not contain spaces or control characters"),
        ("host=db1", #"must not contain "=""#),
        ("db1'", #"must not contain "'""#),
        (#"db\1"#, #"must not contain "\\""#),
        ("db1,db2", #"must not contain "," (one host per probe)"#),
        ("/var/run/postgresql", #"must not contain "/""#),
        ("user@db1", #"must not contain "@""#),
        ("db1?sslmode=disable", #"must not contain "=""#),
        ("db1?x", #"must not contain "?""#),
        ("db1#x", ##"must not contain "#""##),
        ("-db1", #"a host must not start with "-""#),
        ("-oProxyCommand:22", #"a host must not start with "-""#),
        ("db%1", #"a host name may only contain letters, digits, ".", "-" and "_""#),
        ("dbé.example", #"a host name may only contain letters, digits, ".", "-" and "_""#),
        ("db1]:5432", #"a host name may only contain letters, digits, ".", "-" and "_""#),
        ("db..example.com", #"a host name must not have an empty label (".." or a leading ".")"#),
        (".db1", #"a host name must not have an empty label (".." or a leading ".")"#),
        (".", #"a host name must not have an empty label (".." or a leading ".")"#),
        ("db1..", #"a host name must not have an empty label (".." or a leading ".")"#),
        (
            String(repeating: "a", count: 64) + ".example",
            "each label of a host name (between dots) must be at most 63 characters"
        ),
        ("10.0.0.256", "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"),
        ("10.0.0", "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"),
        ("127.1", "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"),
        ("2130706433", "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"),
        ("0x7f.0.0.1", "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"),
        ("127.0.0.0x1", "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"),
        ("0X7F000001", "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"),
        ("010.0.0.1", "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"),
        ("10.0.0.1.", "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"),
        ("db.example.123", "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"),
        ("::1", "write an IPv6 address in brackets, as [::1] or [::1]:5432"),
        ("fe80::1:5432", "write an IPv6 address in brackets, as [::1] or [::1]:5432"),
        ("db1:5432:5433", "write an IPv6 address in brackets, as [::1] or [::1]:5432"),
        ("[::1", #"missing "]" after the IPv6 address"#),
        ("[::1]5432", #"expected ":port" after "]""#),
        ("[::1]]", #"expected ":port" after "]""#),
        ("[fe80::1%eth0]:5432", "IPv6 zone ids (%...) are not supported"),
        ("[10.0.0.1]", #""10.0.0.1" is not a valid IPv6 address (only IPv6 goes in brackets)"#),
        ("[db1]", #""db1" is not a valid IPv6 address (only IPv6 goes in brackets)"#),
        ("[]", #""" is not a valid IPv6 address (only IPv6 goes in brackets)"#),
        ("[::1::2]", #""::1::2" is not a valid IPv6 address (only IPv6 goes in brackets)"#),
        ("db1:", #"missing port after ":""#),
        ("[::1]:", #"missing port after ":""#),
        (":5432", "missing host"),
        ("db1:0", "the port must be a number from 1 to 65535"),
        ("db1:65536", "the port must be a number from 1 to 65535"),
        ("db1:-1", "the port must be a number from 1 to 65535"),
        ("db1:+5432", "the port must be a number from 1 to 65535"),
        ("db1:5432x", "the port must be a number from 1 to 65535"),
        ("db1:٥٤٣٢", "the port must be a number from 1 to 65535"),
        ("db1:99999999999999999999", "the port must be a number from 1 to 65535"),
        ("[::1]:0", "the port must be a number from 1 to 65535"),
    ]

    @Test("rejects each kind of bad input with a message that quotes it", arguments: invalid)
    func rejects(text: String, problem: String) {
        #expect(
            ProbeAddress.parse(text)
                == .failure(ProbeAddressError(message: "invalid target \(ProbeAddress.quoted(text)): \(problem)")))
    }

    @Test("a name of 254 characters is too long")
    func tooLong() {
        let name = String(repeating: "a.", count: 127)
        #expect(name.count == 254)
        guard case .failure(let error) = ProbeAddress.parse(name) else {
            Issue.record("accepted")
            return
        }
        #expect(error.message.hasSuffix(": a host name must be at most 253 characters (got 254)"))
    }

    @Test("the quoted input is escaped and cut, so the message stays one short line")
    func quoting() {
        #expect(ProbeAddress.quoted("db1") == #""db1""#)
        #expect(ProbeAddress.quoted("a\"b\\c") == #""a\"b\\c""#)
        #expect(ProbeAddress.quoted("a\nb\u{0}é") == #""a\u{a}b\u{0}\u{e9}""#)
        let long = String(repeating: "x", count: 150)
        #expect(ProbeAddress.quoted(long) == "\"" + String(repeating: "x", count: 100) + "...\"")

        guard case .failure(let error) = ProbeAddress.parse("db1\r\nX-Injected: 1") else {
            Issue.record("accepted")
            return
        }
        #expect(
            error.message
                == #"invalid target "db1\u{d}\u{a}X-Injected: 1": "# + "must not contain spaces or control characters")
        #expect(!error.message.contains("\n") && !error.message.contains("\r"))
    }

    @Test("description brackets IPv6 and parses back to the same address")
    func description() throws {
        #expect(ProbeAddress(host: "db1", port: 5432).description == "db1:5432")
        #expect(ProbeAddress(host: "10.0.0.1", port: 6432).description == "10.0.0.1:6432")
        #expect(ProbeAddress(host: "::1", port: 5432).description == "[::1]:5432")
        for text in ["db1", "10.0.0.1:6432", "[::1]", "[2001:db8::7]:5433", "Mixed.Case.Example"] {
            let address = try ProbeAddress.parse(text).get()
            #expect(try ProbeAddress.parse(address.description).get() == address)
        }
    }

    @Test func isIPLiteral() {
        #expect(ProbeAddress(host: "10.0.0.1", port: 5432).isIPLiteral)
        #expect(ProbeAddress(host: "::1", port: 5432).isIPLiteral)
        #expect(ProbeAddress(host: "::ffff:10.0.0.1", port: 5432).isIPLiteral)
        #expect(!ProbeAddress(host: "db1", port: 5432).isIPLiteral)
        #expect(!ProbeAddress(host: "10.0.0.256", port: 5432).isIPLiteral)
        #expect(!ProbeAddress(host: "10.0.0.1.nip.io", port: 5432).isIPLiteral)
    }
}
