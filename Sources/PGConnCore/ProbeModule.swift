/// One `modules:` entry: how to probe a host named only by `/probe?target=host[:port]&module=<name>`.
///
/// A module is a target without a host: user, database, TLS, options, password source and query are here; the
/// host and port come from the request (targets found by Prometheus service discovery) and are probed only if
/// ``permits(_:)`` says so. Built only by ``ConfigLoader``, like ``TargetConfig``: the initializer and the
/// setters are internal.
public struct ProbeModule: Sendable, Equatable {
    /// The probe timeout (connect and query) when `timeout` is not written.
    public static let defaultTimeout: Duration = .seconds(5)

    public internal(set) var name: String
    public internal(set) var user: String?
    public internal(set) var database: String?
    public internal(set) var sslmode: String?
    /// Other libpq keywords (`options:` mapping), sorted by key. Never host, port, user, dbname, sslmode or
    /// password: those come from the request, the keys above and the password source.
    public internal(set) var options: [(key: String, value: String)]
    public internal(set) var password: PasswordSource
    public internal(set) var query: String
    public internal(set) var expect: ExpectedRole
    /// Bounds the connect and the query alike; greater than zero.
    public internal(set) var timeout: Duration
    /// Never empty: nothing is probed unless a rule matches.
    public internal(set) var allow: [ProbeAllowRule]
    /// The ports a probe may name, each in 1...65535; `nil`: any port.
    public internal(set) var ports: [Int]?
    /// What the DSN parser read from this module's connection string (probing localhost:5432) when the config
    /// was loaded, so ``targetConfig(for:)`` shows database, user and sslmode with the same defaults as a
    /// target's summary (libpq's, and its environment's); host and port are replaced by the probed address.
    var summary: DSNSummary

    /// `summary` defaults to the module's own values, `""` where unset (the loader passes the parser's).
    init(
        name: String, user: String? = nil, database: String? = nil, sslmode: String? = nil,
        options: [(key: String, value: String)] = [], password: PasswordSource = .none, query: String = "SELECT 1",
        expect: ExpectedRole = .any, timeout: Duration = ProbeModule.defaultTimeout, allow: [ProbeAllowRule],
        ports: [Int]? = nil, summary: DSNSummary? = nil
    ) {
        self.name = name
        self.user = user
        self.database = database
        self.sslmode = sslmode
        self.options = options
        self.password = password
        self.query = query
        self.expect = expect
        self.timeout = timeout
        self.allow = allow
        self.ports = ports
        self.summary =
            summary
            ?? DSNSummary(
                host: "localhost", port: String(ProbeAddress.defaultPort), database: database ?? "", user: user ?? "",
                sslmode: sslmode ?? "")
    }

    /// Whether `address` may be probed with this module: its host matches an allow rule and its port is allowed.
    public func permits(_ address: ProbeAddress) -> Bool {
        (ports?.contains(address.port) ?? true) && allow.contains { $0.matches(address) }
    }

    /// The libpq `key=value` connection string for `address`: host, port, user, dbname and sslmode (those set),
    /// then the options, every value single-quoted with `\` and `'` escaped by a backslash (libpq's conninfo
    /// quoting), so no value can add a keyword.
    ///
    /// Never holds a password: it is read from `password_file` or `password_env` at connect time.
    public func dsn(for address: ProbeAddress) -> String {
        var pairs: [(key: String, value: String)] = [("host", address.host), ("port", String(address.port))]
        if let user { pairs.append(("user", user)) }
        if let database { pairs.append(("dbname", database)) }
        if let sslmode { pairs.append(("sslmode", sslmode)) }
        pairs += options
        return pairs.map { "\($0.key)=\(Self.quoted($0.value))" }.joined(separator: " ")
    }

    /// A target to probe `address` with, named `<module>/<address>` (`app/db1:5432`, `app/[::1]:5432`).
    ///
    /// `timeout` bounds both the connect and the query. Login checks are off and there are no labels: the probe
    /// is one-off. `probe_interval` is unused by a one-off probe; it is set no shorter than the timeout, which
    /// every loaded target guarantees.
    public func targetConfig(for address: ProbeAddress) -> TargetConfig {
        TargetConfig(
            name: "\(name)/\(address)", dsn: dsn(for: address),
            summary: DSNSummary(
                host: address.host, port: String(address.port), database: summary.database, user: summary.user,
                sslmode: summary.sslmode),
            password: password, query: query, probeInterval: max(timeout, ProbeSettings.builtIn.probeInterval),
            probeTimeout: timeout, connectTimeout: timeout, loginInterval: .zero, backoff: .default,
            keepalives: .default, expect: expect, labels: [])
    }

    /// `value` as a libpq conninfo value: in single quotes, with `\` and `'` preceded by a backslash.
    static func quoted(_ value: String) -> String {
        var result = "'"
        for character in value {
            if character == "\\" || character == "'" { result.append("\\") }
            result.append(character)
        }
        return result + "'"
    }

    public static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.name == rhs.name && lhs.user == rhs.user && lhs.database == rhs.database && lhs.sslmode == rhs.sslmode
            && lhs.options.elementsEqual(rhs.options, by: { $0.key == $1.key && $0.value == $1.value })
            && lhs.password == rhs.password && lhs.query == rhs.query && lhs.expect == rhs.expect
            && lhs.timeout == rhs.timeout && lhs.allow == rhs.allow && lhs.ports == rhs.ports
            && lhs.summary == rhs.summary
    }
}
