import Foundation
import Testing

@testable import PGConnCore

/// A stand-in for libpq's `PQconninfoParse`: accepts `key=value` strings containing `host=` (values bare or
/// single-quoted with `\'` and `\\` escaped, keywords from a short list) and `postgres://` / `postgresql://`
/// URIs, and summarises host, port, dbname, user and sslmode.
private func fakeParseDSN(_ dsn: String) -> Result<DSNSummary, DSNError> {
    var fields: [String: String] = [:]
    if dsn.hasPrefix("postgres") {
        guard let url = URLComponents(string: dsn) else { return .failure(DSNError(message: "fake: bad URI")) }
        fields["host"] = url.host
        fields["port"] = url.port.map(String.init)
        fields["user"] = url.user
        fields["dbname"] = url.path.isEmpty ? nil : String(url.path.dropFirst())
        fields["sslmode"] = url.queryItems?.first(where: { $0.name == "sslmode" })?.value
    } else if dsn.contains("host=") {
        guard let pairs = fakeConninfoPairs(dsn) else { return .failure(DSNError(message: "fake: bad quoting")) }
        let keywords: Set<String> = [
            "host", "hostaddr", "port", "dbname", "user", "sslmode", "application_name", "sslcert", "sslrootcert",
            "target_session_attrs", "connect_timeout",
        ]
        for (key, value) in pairs {
            guard keywords.contains(key) else {
                return .failure(DSNError(message: "invalid connection option \"\(key)\""))
            }
            fields[key] = value
        }
    } else {
        return .failure(DSNError(message: "fake parser: not a connection string"))
    }
    return .success(
        DSNSummary(
            host: fields["host"] ?? "", port: fields["port"] ?? "", database: fields["dbname"] ?? "",
            user: fields["user"] ?? "", sslmode: fields["sslmode"] ?? ""))
}

/// Loads a file's text the way the executable hands it over: the loader itself does no I/O.
private func load(file url: URL) throws -> Result<ValidatedConfig, ConfigError> {
    ConfigLoader.load(yaml: try String(contentsOf: url, encoding: .utf8), parseDSN: fakeParseDSN)
}

private func load(fixture name: String) throws -> Result<ValidatedConfig, ConfigError> {
    try load(file: try #require(Bundle.module.resourceURL).appendingPathComponent("Fixtures/config/\(name)"))
}

private func load(yaml: String) -> Result<ValidatedConfig, ConfigError> {
    ConfigLoader.load(yaml: yaml, parseDSN: fakeParseDSN)
}

/// One invalid fixture and every message it must produce, in order.
struct InvalidConfigCase: Sendable, CustomTestStringConvertible {
    var file: String
    var messages: [String]
    var testDescription: String { file }

    init(_ file: String, _ messages: [String]) {
        self.file = file
        self.messages = messages
    }

    static let all: [InvalidConfigCase] = [
        .init(
            "invalid-timeout-longer.yml",
            ["targets[1].probe_timeout: must not be longer than probe_interval (3s > 1s)"]),
        .init(
            "invalid-defaults-timeout.yml",
            ["defaults.probe_timeout: must not be longer than probe_interval (6s > 5s)"]),
        .init("invalid-empty-dsn.yml", ["targets[0].dsn: must not be empty", "targets[1].dsn: must not be empty"]),
        .init("invalid-jitter.yml", ["defaults.backoff.jitter: must be between 0 and 1"]),
        .init(
            "invalid-duplicate-name.yml", [#"targets[2].name: duplicate target name "primary" (first at targets[0])"#]),
        .init(
            "invalid-unknown-keys.yml",
            [
                "target: unknown key",
                "defaults.probe_intreval: unknown key",
                "defaults.backoff.factor: unknown key",
                "targets[0].foo: unknown key",
                "targets[0].keepalives.retries: unknown key",
                "health.required: unknown key",
            ]),
        .init("invalid-health-require.yml", [#"health.require: must be "all", "any" or a positive number of targets"#]),
        .init("invalid-health-word.yml", [#"health.require: must be "all", "any" or a positive number of targets"#]),
        .init("invalid-health-too-many.yml", ["health.require: requires 3 healthy targets but only 2 are configured"]),
        .init(
            "invalid-health-targets.yml",
            [
                #"health.targets[1]: no target named "nope""#, #"health.targets[2]: "a" is listed twice"#,
                #"health.login: expected true or false, got "yes""#,
                "health.require: requires 2 healthy targets but only 1 are listed in health.targets",
            ]),
        .init(
            "invalid-health-targets-empty.yml",
            [
                "health.targets: must list at least one target (leave it out to count every target)",
                "health.probe: unknown key",
            ]),
        .init(
            "invalid-types.yml",
            [
                "defaults.probe_interval: expected a duration such as 5s, got a sequence",
                "defaults.probe_timeout: expected a duration such as 5s, got a mapping",
                "defaults.login_interval: expected a duration such as 5s, got an empty value",
                "defaults.query: expected a string, got a sequence",
                #"defaults.backoff: expected a mapping, got "5s""#,
                #"defaults.keepalives.count: expected a whole number, got "2.5""#,
                #"targets[0].backoff.multiplier: expected a number, got "fast""#,
                "targets[0].backoff.jitter: expected a number, got a sequence",
                "targets[0].labels: expected a mapping of label names to values, got a sequence",
            ]),
        .init(
            "invalid-durations.yml",
            [
                #"defaults.probe_interval: invalid duration "5": missing unit after 5 (use ms, s, m, h, d, w, y)"#,
                #"defaults.probe_timeout: invalid duration "1.5s": fractions are not allowed "#
                    + "(use a smaller unit, e.g. 1500ms)",
                #"defaults.connect_timeout: invalid duration "5x": unknown unit "x" (use ms, s, m, h, d, w, y)"#,
                #"defaults.login_interval: invalid duration "-1m": must not be negative"#,
                #"defaults.backoff.initial: invalid duration "5s1m": units must go from largest to smallest, "#
                    + "each at most once",
            ]),
        .init(
            "invalid-ranges.yml",
            [
                "defaults.probe_interval: must be greater than 0",
                "defaults.connect_timeout: must be greater than 0",
                "defaults.query: must not be empty",
                "defaults.backoff.initial: must be greater than 0",
                "defaults.backoff.multiplier: must be at least 1",
                "defaults.backoff.jitter: must be between 0 and 1",
                "defaults.keepalives.idle: must be a whole number of seconds (libpq takes seconds)",
                "defaults.keepalives.interval: must be greater than 0",
                "defaults.keepalives.count: must be at least 1",
                "targets[0].backoff.max: must not be shorter than backoff.initial (100ms < 250ms)",
            ]),
        .init("invalid-no-targets.yml", ["targets: at least one target is required"]),
        .init("invalid-empty-file.yml", ["targets: at least one target is required"]),
        .init("invalid-targets-type.yml", ["targets: expected a sequence of targets, got a mapping"]),
        .init(
            "invalid-root-type.yml",
            ["expected a mapping with defaults, health, metrics, modules and targets at the top level, got a sequence"]),
        // The scalar is not echoed: a DSN written in the wrong place may hold a password.
        .init("invalid-target-type.yml", ["targets[0]: expected a mapping, got a string"]),
        .init(
            "invalid-syntax.yml",
            [
                "YAML syntax error at line 4, column 1: found unexpected end of stream "
                    + "(while scanning a quoted scalar at line 3, column 10)"
            ]),
        .init(
            "invalid-indentation.yml",
            [
                "YAML syntax error at line 3, column 4: did not find expected '-' indicator "
                    + "(while parsing a block collection at line 2, column 3)"
            ]),
        .init("invalid-duplicate-key.yml", [#"YAML error at line 2, column 5: duplicate key "name""#]),
        .init(
            "invalid-missing-name-dsn.yml",
            ["targets[0].name: required", "targets[0].dsn: required", "targets[1].name: must not be empty"]),
        .init(
            "invalid-names.yml",
            [
                #"targets[0].name: "db one" may only contain letters, digits, "_", "." and "-""#,
                "targets[1].name: must be at most 64 characters (got 69)",
                #"targets[2].name: "prod/eu" may only contain letters, digits, "_", "." and "-""#,
                // A DSN where the name goes may hold a password: described, not echoed.
                #"targets[3].name: a name that looks like a connection string may only contain letters, digits, "_", "." and "-""#,
            ]),
        .init(
            "invalid-password.yml",
            [
                "targets[0]: password_file and password_env are mutually exclusive",
                "targets[1].password_env: must not be empty",
                "targets[2].password_file: must not be empty",
            ]),
        .init(
            "invalid-copy-query.yml",
            [
                "defaults.query: COPY is not allowed in a probe query (statement 1 of 1 starts with COPY, "
                    + "which streams data instead of returning a result)",
                "targets[0].query: COPY is not allowed in a probe query (statement 1 of 1 starts with COPY, "
                    + "which streams data instead of returning a result)",
                "targets[1].query: COPY is not allowed in a probe query (statement 2 of 2 starts with COPY, "
                    + "which streams data instead of returning a result)",
            ]),
        .init("invalid-expect.yml", [#"targets[0].expect: must be "primary", "standby" or "any""#]),
        .init(
            "invalid-labels.yml",
            [
                "targets[0].labels.cluster-name: invalid label name (must match [a-zA-Z_][a-zA-Z0-9_]*)",
                "targets[0].labels.host: reserved label name (pgconn_target_info sets it)",
                #"targets[0].labels.__meta: label names starting with "__" are reserved by Prometheus"#,
                "targets[0].labels.9lives: invalid label name (must match [a-zA-Z_][a-zA-Z0-9_]*)",
                "targets[0].labels.team: expected a string, got a mapping",
            ]),
        .init(
            "invalid-dsn.yml",
            [
                "targets[0].dsn: fake parser: not a connection string",
                "targets[1].dsn: expected a string, got a mapping",
            ]
        ),
        .init(
            "invalid-modules-type.yml",
            ["modules: expected a mapping of module names to their settings, got a sequence"]),
        .init(
            "invalid-modules-allow.yml",
            [
                "modules.missing.allow: \(allowRequired)",
                "modules.empty.allow: \(allowRequired)",
                "modules.blank.allow: \(allowRequired)",
                #"modules.scalar.allow: expected a list of host globs and CIDRs, got "*.example.com""#,
                #"modules.entries.allow[1]: "10.0.0.0/33": the prefix length must be a number from 0 to 32 for IPv4"#,
                #"modules.entries.allow[2]: "10.1.0.0/8": has bits set after the /8 prefix "#
                    + "(the network is 10.0.0.0/8)",
                #"modules.entries.allow[3]: "10.0.0.256": not a valid IPv4 address"#,
                #"modules.entries.allow[4]: "fe80::1::2": not a valid IPv6 address"#,
                #"modules.entries.allow[5]: "db_*.prod example": a host glob may only contain letters, digits, ".", "#
                    + #""-", "_", "*" and "?""#,
                #"modules.entries.allow[6]: "db..example.com": a host name must not have an empty label (".." or a "#
                    + #"leading ".")"#,
                #"modules.entries.allow[7]: "[::1]": write an IPv6 address without brackets"#,
                #"modules.entries.allow[8]: "db1:5432": an allow entry names a host without a port "#
                    + "(list ports under ports)",
                #"modules.entries.allow[9]: "": must not be empty"#,
                "modules.entries.allow[10]: expected a string, got a mapping",
                #"modules.entries.allow[11]: "::/129": the prefix length must be a number from 0 to 128 for IPv6"#,
                #"modules.entries.allow[12]: "10.0.0.0/": the prefix length must be a number from 0 to 32 for IPv4"#,
                #"modules.entries.allow[13]: "10.0.0.*": an IP range as a glob also matches host names "#
                    + "(10.0.0.* matches 10.0.0.evil.example): use a CIDR such as 10.0.0.0/24",
            ]),
        .init(
            "invalid-modules-options.yml",
            [
                "modules.reserved.options.host: not allowed in options: the host comes from the probe's target "
                    + "parameter (limit it with allow)",
                "modules.reserved.options.hostaddr: not allowed in options: the host comes from the probe's target "
                    + "parameter (limit it with allow)",
                "modules.reserved.options.port: not allowed in options: the port comes from the probe's target "
                    + "parameter (limit it with ports)",
                "modules.reserved.options.user: not allowed in options: use the module's user key",
                "modules.reserved.options.dbname: not allowed in options: use the module's database key",
                "modules.reserved.options.sslmode: not allowed in options: use the module's sslmode key",
                "modules.reserved.options.password: not allowed in options: passwords are never written in the "
                    + "config: use password_file or password_env",
                #"modules.malformed.options.Application_Name: not a libpq keyword (lowercase letters, digits and "_")"#,
                #"modules.malformed.options.connect timeout: not a libpq keyword (lowercase letters, digits and "_")"#,
                "modules.malformed.options.sslcert: expected a string, got a mapping",
                #"modules.unknown.options: invalid connection option "bogus_option""#,
                "modules.not_a_mapping.options: expected a mapping of libpq keywords to values, got a sequence",
            ]),
        .init(
            "invalid-modules-keys.yml",
            [
                #"modules.app/primary: "app/primary" may only contain letters, digits, "_", "." and "-""#,
                "modules.app.usr: unknown key",
                "modules.app.user: must not be empty",
                "modules.app.database: must not contain control characters",
                "modules.app.sslmode: must be one of disable, allow, prefer, require, verify-ca, verify-full",
                "modules.app.query: COPY is not allowed in a probe query (statement 1 of 1 starts with COPY, "
                    + "which streams data instead of returning a result)",
                #"modules.app.expect: must be "primary", "standby" or "any""#,
                "modules.app.timeout: must be greater than 0",
                "modules.app.ports[1]: must be from 1 to 65535 (got 0)",
                "modules.app.ports[2]: must be from 1 to 65535 (got 70000)",
                "modules.app.ports[3]: 5432 is listed twice",
                #"modules.app.ports[4]: expected a whole number, got "x""#,
                "modules.app: password_file and password_env are mutually exclusive",
                "modules.other.query: must not be empty",
                #"modules.other.timeout: invalid duration "5": missing unit after 5 (use ms, s, m, h, d, w, y)"#,
                "modules.other.ports: must list at least one port (leave it out to allow any port)",
                #"modules.scalar: expected a mapping, got "*""#,
            ]),
    ]

    static let allowRequired = "at least one host glob or CIDR is required: nothing is allowed unless listed"
}

@Suite("ConfigLoader")
struct ConfigLoaderTests {
    @Test("a full config resolves defaults, overrides and partial overrides")
    func fullConfig() throws {
        let config = try load(fixture: "valid-full.yml").get()
        #expect(config.health.require == .atLeast(2))
        #expect(config.targets.map(\.name) == ["primary", "standby-1.eu", "reporting"])

        let primary = config.targets[0]
        #expect(primary.dsn == "postgresql://monitor@db1:5432/postgres?sslmode=verify-full")
        #expect(
            primary.summary
                == DSNSummary(host: "db1", port: "5432", database: "postgres", user: "monitor", sslmode: "verify-full"))
        #expect(primary.password == .file("/etc/pgconn/primary.password"))
        #expect(primary.expect == .primary)
        #expect(primary.labels.map(\.key) == ["az", "cluster"])
        #expect(primary.labels.map(\.value) == ["eu-1a", "main"])
        #expect(primary.probeInterval == .seconds(10))
        #expect(primary.probeTimeout == .seconds(3))
        #expect(primary.connectTimeout == .seconds(4))
        #expect(primary.loginInterval == .seconds(120))
        #expect(primary.query == "SELECT 42")
        #expect(
            primary.backoff
                == BackoffConfig(initial: .milliseconds(500), max: .seconds(60), multiplier: 1.5, jitter: 0.1))
        #expect(
            primary.keepalives
                == KeepaliveConfig(idle: .seconds(20), interval: .seconds(2), count: 5, userTimeout: .seconds(30)))

        let standby = config.targets[1]
        #expect(
            standby.summary == DSNSummary(host: "db2", port: "6432", database: "app", user: "probe", sslmode: "require")
        )
        #expect(standby.password == .environment("PGCONN_STANDBY_PASSWORD"))
        #expect(standby.expect == .standby)
        #expect(standby.labels.isEmpty)
        #expect(standby.probeInterval == .seconds(1))
        #expect(standby.probeTimeout == .milliseconds(500))
        #expect(standby.connectTimeout == .seconds(1))
        #expect(standby.loginInterval == .zero)
        #expect(standby.query == "SELECT pg_is_in_recovery()")
        // Partial overrides keep the other values from `defaults`.
        #expect(
            standby.backoff
                == BackoffConfig(initial: .milliseconds(500), max: .seconds(30), multiplier: 1.5, jitter: 0.1))
        #expect(
            standby.keepalives
                == KeepaliveConfig(idle: .seconds(20), interval: .seconds(2), count: 1, userTimeout: .seconds(30)))

        let reporting = config.targets[2]
        #expect(reporting.password == .none)
        #expect(reporting.expect == .any)
        #expect(reporting.probeInterval == .seconds(10))
        #expect(reporting.backoff == primary.backoff)
        #expect(reporting.keepalives == primary.keepalives)
    }

    @Test("modules: every key read, options sorted, the parser's summary kept, config order")
    func modulesConfig() throws {
        let config = try load(fixture: "valid-modules.yml").get()
        #expect(config.modules.map(\.name) == ["app_primary", "sd.default"])
        let app = try #require(config.module(named: "app_primary"))
        #expect(app.user == "monitor")
        #expect(app.database == "postgres")
        #expect(app.sslmode == "require")
        #expect(app.password == .file("/etc/pgconn_exporter/monitor.pass"))
        #expect(app.options.map(\.key) == ["sslcert", "sslrootcert", "target_session_attrs"])
        #expect(app.options.map(\.value) == [#"it's a \ test"#, "/etc/ca.pem", "read-write"])
        #expect(app.query == "SELECT 1")
        #expect(app.expect == .primary)
        #expect(app.timeout == .seconds(3))
        #expect(app.ports == [5432, 6432])
        #expect(
            app.allow.map(\.description) == [
                "db-*.prod.example.com", "10.0.0.0/8", "127.0.0.1/32", "::1/128", "db?.example.com", "fd00::/8",
            ])
        #expect(
            app.summary
                == DSNSummary(
                    host: "localhost", port: "5432", database: "postgres", user: "monitor", sslmode: "require"))
        #expect(app.permits(ProbeAddress(host: "db-7.prod.example.com", port: 6432)))
        #expect(!app.permits(ProbeAddress(host: "db-7.prod.example.com", port: 5433)))

        let plain = try #require(config.module(named: "sd.default"))
        #expect(
            plain
                == ProbeModule(
                    name: "sd.default", password: .environment("PGCONN_PASSWORD"), query: "SELECT 1", expect: .any,
                    timeout: .seconds(5), allow: [.host("*")], ports: nil,
                    summary: DSNSummary(host: "localhost", port: "5432", database: "", user: "", sslmode: "")))
        #expect(config.module(named: "nope") == nil)
        #expect(config.module(named: "APP_PRIMARY") == nil)
    }

    @Test("modules are optional, may be empty, and do not replace targets")
    func modulesOptional() throws {
        #expect(try load(yaml: "targets: [{name: a, dsn: host=a}]").get().modules.isEmpty)
        #expect(try load(yaml: "targets: [{name: a, dsn: host=a}]\nmodules:").get().modules.isEmpty)
        #expect(try load(yaml: "targets: [{name: a, dsn: host=a}]\nmodules: {}").get().modules.isEmpty)
        guard case .failure(let error) = load(yaml: "modules: {m: {allow: [\"*\"]}}") else {
            Issue.record("a config with modules and no targets was accepted")
            return
        }
        #expect(error.messages == ["targets: at least one target is required"])
    }

    @Test("a module's dsn goes through the parser for localhost:5432, quoted")
    func moduleDSNIsParsed() throws {
        var seen: [String] = []
        let yaml = """
            targets: [{name: a, dsn: host=a}]
            modules: {m: {user: "o'neil", allow: ["*"], options: {sslcert: 'a b'}}}
            """
        _ = ConfigLoader.load(yaml: yaml) { dsn in
            seen.append(dsn)
            return fakeParseDSN(dsn)
        }
        #expect(seen == ["host=a", #"host='localhost' port='5432' user='o\'neil' sslcert='a b'"#])
    }

    @Test("a minimal config gets the built-in defaults")
    func minimalConfig() throws {
        let config = try load(fixture: "valid-minimal.yml").get()
        #expect(
            config
                == ValidatedConfig(
                    health: HealthPolicy(),
                    targets: [
                        TargetConfig(
                            name: "db", dsn: "host=localhost",
                            summary: DSNSummary(host: "localhost", port: "", database: "", user: "", sslmode: ""),
                            password: .none, query: "SELECT 1", probeInterval: .seconds(5),
                            probeTimeout: .seconds(2), connectTimeout: .seconds(5), loginInterval: .seconds(60),
                            backoff: BackoffConfig(
                                initial: .milliseconds(250), max: .seconds(5), multiplier: 2, jitter: 0.2),
                            keepalives: KeepaliveConfig(
                                idle: .seconds(10), interval: .seconds(5), count: 3, userTimeout: .seconds(15)),
                            expect: .any, labels: [])
                    ]))
    }

    @Test(
        "health.require accepts all, any and a count",
        arguments: [("all", HealthRequirement.all), ("any", .any), ("1", .atLeast(1)), ("2", .atLeast(2))])
    func healthRequire(text: String, expected: HealthRequirement) throws {
        let yaml = """
            health: {require: \(text)}
            targets: [{name: a, dsn: host=a}, {name: b, dsn: host=b}]
            """
        #expect(try load(yaml: yaml).get().health.require == expected)
    }

    @Test func healthTargetsAndLoginAreRead() throws {
        let yaml = """
            health: {require: any, targets: [b], login: true}
            targets: [{name: a, dsn: host=a}, {name: b, dsn: host=b}]
            """
        #expect(try load(yaml: yaml).get().health == HealthPolicy(require: .any, targets: ["b"], login: true))
        let plain = "targets: [{name: a, dsn: host=a}]"
        #expect(try load(yaml: plain).get().health == HealthPolicy(require: .all, targets: nil, login: false))
    }

    /// Like Prometheus' `scrape_timeout`: unset, it is 2s or the interval if shorter; equal to it is allowed.
    static let probeTimeoutCases: [(yaml: String, expected: [Duration])] = [
        ("targets: [{name: a, dsn: host=a, probe_interval: 1s}]", [.seconds(1)]),
        ("targets: [{name: a, dsn: host=a, probe_interval: 500ms}]", [.milliseconds(500)]),
        ("targets: [{name: a, dsn: host=a, probe_interval: 10s}]", [.seconds(2)]),
        ("defaults: {probe_interval: 1s}\ntargets: [{name: a, dsn: host=a}]", [.seconds(1)]),
        // Unset everywhere: capped by each target's own interval, not by the one in defaults.
        (
            "defaults: {probe_interval: 1s}\n"
                + "targets: [{name: a, dsn: host=a, probe_interval: 10s}, {name: b, dsn: host=b}]",
            [.seconds(2), .seconds(1)]
        ),
        ("targets: [{name: a, dsn: host=a, probe_interval: 3s, probe_timeout: 3s}]", [.seconds(3)]),
        ("defaults: {probe_interval: 3s, probe_timeout: 3s}\ntargets: [{name: a, dsn: host=a}]", [.seconds(3)]),
        // Written in defaults, it is inherited as written.
        ("defaults: {probe_timeout: 4s}\ntargets: [{name: a, dsn: host=a}]", [.seconds(4)]),
    ]

    @Test(
        "an unset probe_timeout is min(2s, probe_interval); equal to the interval is valid",
        arguments: probeTimeoutCases)
    func probeTimeoutDefault(yaml: String, expected: [Duration]) throws {
        #expect(try load(yaml: yaml).get().targets.map(\.probeTimeout) == expected)
    }

    @Test("merge keys share settings between targets; keys written in the target win")
    func mergeKeys() throws {
        let yaml = """
            targets:
              - &common
                name: a
                dsn: host=a
                probe_interval: 30s
                labels: {team: dba}
              - <<: *common
                name: b
                dsn: host=b
            """
        let config = try load(yaml: yaml).get()
        #expect(config.targets.map(\.name) == ["a", "b"])
        #expect(config.targets[1].dsn == "host=b")
        #expect(config.targets[1].probeInterval == .seconds(30))
        #expect(config.targets[1].labels.map(\.key) == ["team"])
    }

    @Test("each invalid fixture gives exactly its messages", arguments: InvalidConfigCase.all)
    func invalidFixture(testCase: InvalidConfigCase) throws {
        let result = try load(fixture: testCase.file)
        guard case .failure(let error) = result else {
            Issue.record("\(testCase.file) was accepted")
            return
        }
        #expect(error.messages == testCase.messages)
        #expect(error.description == testCase.messages.joined(separator: "\n"))
    }

    @Test("every invalid-*.yml fixture has expected messages")
    func everyInvalidFixtureIsListed() throws {
        let directory = try #require(Bundle.module.resourceURL).appendingPathComponent("Fixtures/config")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasPrefix("invalid-") }
        #expect(Set(files) == Set(InvalidConfigCase.all.map(\.file)))
    }

    @Test("a password in a rejected DSN never reaches the messages")
    func passwordNotEchoed() {
        let yaml = """
            targets:
              - name: a
                dsn: user=x password=hunter2
              - password=hunter2 host=b
            """
        guard case .failure(let error) = load(yaml: yaml) else {
            Issue.record("accepted")
            return
        }
        #expect(
            error.messages == [
                "targets[0].dsn: fake parser: not a connection string", "targets[1]: expected a mapping, got a string",
            ])
        #expect(!error.description.contains("hunter2"))
    }

    @Test("config/example.yml is valid and sets every key")
    func exampleConfig() throws {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
        let url = root.appendingPathComponent("config/example.yml")
        let config = try load(file: url).get()
        #expect(config.targets.count == 3)
        #expect(config.targets.first { $0.name == "standby" }?.maxReplayLag == .seconds(30))
        #expect(config.targets.first { $0.name == "app_primary" }?.summary.host.contains(",") == true)
        #expect(config.modules.map(\.name) == ["app"])
        #expect(config.targets.contains { if case .file = $0.password { true } else { false } })
        let text = try String(contentsOf: url, encoding: .utf8)
        let keys = [
            "defaults", "probe_interval", "probe_timeout", "connect_timeout", "login_interval", "query", "backoff",
            "initial", "max", "multiplier", "jitter", "keepalives", "idle", "interval", "count", "user_timeout",
            "health", "require", "targets", "name", "dsn", "password_file", "password_env", "expect", "labels",
            "modules", "user", "database", "sslmode", "options", "timeout", "allow", "ports", "metrics", "histograms",
            "reasons", "max_replay_lag",
        ]
        #expect(keys.filter { !text.contains("\($0):") }.isEmpty)
    }
}

/// `max_replay_lag`: a standby's freshness bound.
@Suite struct MaxReplayLagConfigTests {
    @Test func isReadForStandbysAndRefusedForOtherRoles() throws {
        let config = try load(
            yaml: """
                targets:
                  - name: reads
                    dsn: host=db2
                    expect: standby
                    max_replay_lag: 30s
                  - name: writes
                    dsn: host=db1
                """
        ).get()
        #expect(config.targets[0].maxReplayLag == .seconds(30))
        #expect(config.targets[1].maxReplayLag == nil)
        #expect(SessionQueries.probe(for: config.targets[0]).contains("pg_last_xact_replay_timestamp()"))
        #expect(!SessionQueries.probe(for: config.targets[1]).contains("pg_last_xact_replay_timestamp()"))

        let wrong = load(
            yaml: "targets:\n  - name: w\n    dsn: host=db1\n    expect: primary\n    max_replay_lag: 30s\n")
        guard case .failure(let error) = wrong else {
            Issue.record("accepted")
            return
        }
        #expect(error.messages == ["targets[0].max_replay_lag: needs expect: standby (only a standby replays)"])
        let zero = load(yaml: "targets:\n  - name: w\n    dsn: host=db1\n    expect: standby\n    max_replay_lag: 0s\n")
        guard case .failure(let zeroError) = zero else {
            Issue.record("accepted")
            return
        }
        #expect(zeroError.messages == ["targets[0].max_replay_lag: must be greater than 0"])
    }

    @Test func aStandbyBehindTheLimitFailsItsProbeWithReplicationLag() {
        var config = SessionStateMachineTests.config
        config.expect = .standby
        config.maxReplayLag = .seconds(30)
        var machine = SessionStateMachine(config: config, seed: 1)
        let at = { (seconds: Double) in MonotonicInstant(nanoseconds: Int64(seconds * 1e9)) }
        _ = machine.start(now: at(0))
        _ = machine.connected(now: at(0.05))
        _ = machine.factsRead(ServerFacts(inRecovery: true), now: at(0.06))
        let fresh = machine.probeSucceeded(inRecovery: true, replayLag: 3, now: at(0.1))
        #expect(fresh.observations.contains(.replayLag(seconds: 3)))
        #expect(machine.isHealthy)
        _ = machine.timerFired(now: at(5.06))
        let behind = machine.probeSucceeded(inRecovery: true, replayLag: 42.04, now: at(5.1))
        #expect(
            behind.observations.contains(
                .probeFailed(
                    Failure(reason: .replicationLag, message: "replay is 42.0s behind, over max_replay_lag 30s"))))
        #expect(!machine.isHealthy)
        #expect(machine.stateName == .up, "the session stays")
    }
}

/// Hostile YAML: aliases and merge keys that expand exponentially, and deep nesting. Each is a clear error at once,
/// not a hang or a memory blow-up (`--config.check` and a reload run the same loader).
@Suite struct HostileYAMLTests {
    @Test func aMergeBombIsRefusedInsteadOfExpanded() {
        var lines = ["x0: &x0 {probe_interval: 5s}"]
        for level in 1...8 {
            lines.append(
                "x\(level): &x\(level) {<<: [\(Array(repeating: "*x\(level - 1)", count: 10).joined(separator: ","))]}")
        }
        lines += ["defaults: *x8", "targets: [{name: a, dsn: \"host=h\"}]"]
        let clock = ContinuousClock()
        let start = clock.now
        guard case .failure(let error) = load(yaml: lines.joined(separator: "\n")) else {
            Issue.record("a merge bomb loaded")
            return
        }
        print("merge bomb refused in \(clock.now - start)")
        #expect(error.messages.contains { $0.contains("more than 1000 mappings merged with <<") }, "\(error.messages)")
    }

    @Test func anAliasBombIsWalkedOnlyAsDeepAsTheConfigGoes() {
        var lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
        for level in 1...9 {
            lines.append(
                "a\(level): &a\(level) [\(Array(repeating: "*a\(level - 1)", count: 10).joined(separator: ","))]")
        }
        lines.append("targets: *a9")
        guard case .failure(let error) = load(yaml: lines.joined(separator: "\n")) else {
            Issue.record("an alias bomb loaded")
            return
        }
        #expect(error.messages.contains("targets[0]: expected a mapping, got a sequence"))
        #expect(error.messages.count < 30)
    }

    @Test func deepNestingIsASyntaxError() {
        let yaml = "targets: " + String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)
        guard case .failure(let error) = load(yaml: yaml) else {
            Issue.record("100,000 nested sequences loaded")
            return
        }
        #expect(error.messages.first?.hasPrefix("YAML syntax error") == true, "\(error.messages)")
    }
}
