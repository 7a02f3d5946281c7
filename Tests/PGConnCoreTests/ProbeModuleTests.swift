import Testing

@testable import PGConnCore

/// The pairs of a `key=value` string as libpq's `PQconninfoParse` reads it (values bare, or single-quoted with `\'`
/// and `\\` escaped); `nil` for an unterminated quote or a missing `=`. Also the fake DSN parser's tokenizer.
func fakeConninfoPairs(_ dsn: String) -> [(key: String, value: String)]? {
    var pairs: [(key: String, value: String)] = []
    var rest = Substring(dsn)
    while true {
        rest = rest.drop(while: { $0 == " " })
        guard !rest.isEmpty else { return pairs }
        guard let equals = rest.firstIndex(of: "=") else { return nil }
        let key = String(rest[..<equals])
        rest = rest[rest.index(after: equals)...]
        var value = ""
        if rest.first == "'" {
            rest = rest.dropFirst()
            var closed = false
            while let character = rest.popFirst() {
                if character == "\\" {
                    guard let escaped = rest.popFirst() else { return nil }
                    value.append(escaped)
                } else if character == "'" {
                    closed = true
                    break
                } else {
                    value.append(character)
                }
            }
            guard closed else { return nil }
        } else {
            value = String(rest.prefix(while: { $0 != " " }))
            rest = rest.drop(while: { $0 != " " })
        }
        pairs.append((key, value))
    }
}

@Suite("ProbeModule")
struct ProbeModuleTests {
    private static func rules(_ texts: [String]) throws -> [ProbeAllowRule] {
        try texts.map { try ProbeAllowRule.parse($0).get() }
    }

    private static func address(_ text: String) throws -> ProbeAddress {
        try ProbeAddress.parse(text).get()
    }

    @Test("permits: some allow rule matches the host and the port is listed (any port without ports)")
    func permits() throws {
        let anyPort = ProbeModule(name: "m", allow: try Self.rules(["db-*.prod.example.com", "10.0.0.0/8", "::1"]))
        #expect(anyPort.permits(try Self.address("db-1.prod.example.com")))
        #expect(anyPort.permits(try Self.address("db-1.prod.example.com:1")))
        #expect(anyPort.permits(try Self.address("10.20.30.40:65535")))
        #expect(anyPort.permits(try Self.address("[::1]:6432")))
        #expect(!anyPort.permits(try Self.address("db-1.staging.example.com")))
        #expect(!anyPort.permits(try Self.address("11.0.0.1")))
        #expect(!anyPort.permits(try Self.address("[::2]")))

        var listed = anyPort
        listed.ports = [5432, 6432]
        #expect(listed.permits(try Self.address("db-1.prod.example.com")))
        #expect(listed.permits(try Self.address("10.0.0.1:6432")))
        #expect(!listed.permits(try Self.address("10.0.0.1:22")))
        #expect(!listed.permits(try Self.address("db-1.prod.example.com:5433")))
        // A listed port does not open a host that no rule allows.
        #expect(!listed.permits(try Self.address("evil.example.com:5432")))
    }

    @Test("dsn: the set keys in order, then options, every value quoted with \\ and ' escaped")
    func dsnQuoting() throws {
        let module = ProbeModule(
            name: "m", user: "o'neil", database: "my db", sslmode: "require",
            options: [("application_name", #"it's a \ test"#), ("sslrootcert", "/etc/ca.pem")],
            password: .file("/etc/pgconn/monitor.password"), allow: [.host("*")])
        let dsn = module.dsn(for: try Self.address("db1:6432"))
        #expect(
            dsn
                == #"host='db1' port='6432' user='o\'neil' dbname='my db' sslmode='require' "#
                + #"application_name='it\'s a \\ test' sslrootcert='/etc/ca.pem'"#)
        // Read back the way libpq reads it, each value is what was configured.
        let pairs = try #require(fakeConninfoPairs(dsn))
        #expect(pairs.map(\.key) == ["host", "port", "user", "dbname", "sslmode", "application_name", "sslrootcert"])
        #expect(pairs.map(\.value) == ["db1", "6432", "o'neil", "my db", "require", #"it's a \ test"#, "/etc/ca.pem"])
        #expect(!dsn.contains("password"))
    }

    @Test("dsn: only host and port when nothing else is set; IPv6 without brackets")
    func dsnMinimal() throws {
        let module = ProbeModule(name: "m", allow: [.host("*")])
        #expect(module.dsn(for: try Self.address("db1")) == "host='db1' port='5432'")
        #expect(module.dsn(for: try Self.address("[2001:db8::1]:6432")) == "host='2001:db8::1' port='6432'")
        #expect(ProbeModule.quoted("") == "''")
        #expect(ProbeModule.quoted(#"\'"#) == #"'\\\''"#)
    }

    @Test("targetConfig: one-off settings from the module, summary from the parser with the probed host")
    func targetConfig() throws {
        let module = ProbeModule(
            name: "app", user: "monitor", sslmode: "require", options: [("application_name", "x")],
            password: .environment("PGCONN_PASSWORD"), query: "SELECT 42", expect: .standby, timeout: .seconds(3),
            allow: [.host("*")], ports: [5432],
            summary: DSNSummary(
                host: "localhost", port: "5432", database: "monitor", user: "monitor", sslmode: "require"))
        let address = try Self.address("DB1.Example.com")
        let target = module.targetConfig(for: address)
        #expect(
            target
                == TargetConfig(
                    name: "app/db1.example.com:5432", dsn: module.dsn(for: address),
                    summary: DSNSummary(
                        host: "db1.example.com", port: "5432", database: "monitor", user: "monitor",
                        sslmode: "require"),
                    password: .environment("PGCONN_PASSWORD"), query: "SELECT 42", probeInterval: .seconds(5),
                    probeTimeout: .seconds(3), connectTimeout: .seconds(3), loginInterval: .zero,
                    backoff: .default, keepalives: .default, expect: .standby, labels: []))
        #expect(module.targetConfig(for: try Self.address("[::1]:6432")).name == "app/[::1]:6432")
        #expect(module.targetConfig(for: try Self.address("[::1]:6432")).summary.port == "6432")

        var slow = module
        slow.timeout = .seconds(30)
        let slowTarget = slow.targetConfig(for: address)
        #expect(slowTarget.probeTimeout == .seconds(30))
        #expect(slowTarget.probeInterval == .seconds(30))
    }

    @Test("without a parser summary, the module's own values, empty where unset")
    func defaultSummary() {
        let module = ProbeModule(name: "m", user: "monitor", allow: [.host("*")])
        #expect(
            module.summary
                == DSNSummary(host: "localhost", port: "5432", database: "", user: "monitor", sslmode: ""))
    }

    @Test("== compares every field, options in order")
    func equality() {
        let base = ProbeModule(name: "m", options: [("a", "1"), ("b", "2")], allow: [.host("*")])
        #expect(base == ProbeModule(name: "m", options: [("a", "1"), ("b", "2")], allow: [.host("*")]))
        #expect(base != ProbeModule(name: "m", options: [("a", "1"), ("b", "3")], allow: [.host("*")]))
        #expect(base != ProbeModule(name: "m", options: [("a", "1")], allow: [.host("*")]))
        #expect(base != ProbeModule(name: "m", options: [("a", "1"), ("b", "2")], allow: [.host("db*")]))
        var ports = base
        ports.ports = [5432]
        #expect(base != ports)
        var timeout = base
        timeout.timeout = .seconds(1)
        #expect(base != timeout)
    }
}
