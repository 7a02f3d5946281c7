import Glibc
import Synchronization

@testable import PGConnCore
@testable import PGConnHTTP
@testable import PGConnPostgres

/// The fuzz targets: each takes any bytes and checks what must hold for every input, stopping the process
/// (`fatalError`, which libFuzzer reports as a crash with the input saved) when it does not.
///
/// libFuzzer calls ``run(_:)`` through `LLVMFuzzerTestOneInput` in `make fuzz`; the driver and
/// `FuzzCorpusTests` replay the seed corpora in Tests/Fuzz/<target> through the same function.
public enum FuzzTarget: String, CaseIterable, Sendable {
    /// The YAML config loader with libpq's DSN parser: a config or non-empty errors.
    case config
    /// The exporter-toolkit web config loader: a config or non-empty errors.
    case webconfig
    /// A connection string: libpq's parser, the summary, the host list the resolver expands, the startup options.
    case dsn
    /// An HTTP request (method, path, query, headers) through the router, `/probe`'s checks and basic auth.
    case http
    /// The Prometheus duration parser: what parses formats back to the same duration.
    case duration
    /// A server or libpq error (an optional SQLSTATE, then the message) through the failure classifier.
    case failure
    /// A label value through the exposition format's escaping.
    case labels

    /// The target `PGCONN_FUZZ_TARGET` names.
    public static var fromEnvironment: FuzzTarget {
        guard let name = getenv("PGCONN_FUZZ_TARGET").map({ String(cString: $0) }),
            let target = FuzzTarget(rawValue: name)
        else {
            fatalError("PGCONN_FUZZ_TARGET must be one of " + allCases.map(\.rawValue).joined(separator: ", "))
        }
        return target
    }

    public func run(_ bytes: [UInt8]) {
        let text = String(decoding: bytes, as: UTF8.self)
        switch self {
        case .config: Self.config(text)
        case .webconfig: Self.webConfig(text)
        case .dsn: Self.dsn(text)
        case .http: Self.http(bytes)
        case .duration: Self.duration(text)
        case .failure: Self.failure(bytes)
        case .labels: Self.labels(text)
        }
    }

    private static func check(_ condition: Bool, _ message: @autoclosure () -> String) {
        if !condition { fatalError("fuzz property failed: \(message())") }
    }

    private static func config(_ text: String) {
        switch ConfigLoader.load(yaml: text, parseDSN: DSNParser.parse) {
        case .success(let config):
            check(Set(config.targets.map(\.name)).count == config.targets.count, "target names are unique")
        case .failure(let error):
            check(!error.messages.isEmpty && error.messages.allSatisfy { !$0.isEmpty }, "errors say why")
        }
    }

    private static func webConfig(_ text: String) {
        if case .failure(let error) = WebConfigLoader.load(yaml: text, directory: "/nonexistent") {
            check(!error.messages.isEmpty && error.messages.allSatisfy { !$0.isEmpty }, "errors say why")
        }
    }

    /// The target whose settings the DSN target builds startup options for.
    private static let target: TargetConfig = {
        let yaml = "targets:\n  - name: t\n    dsn: host=127.0.0.1 port=5432 dbname=postgres user=u\n"
        guard case .success(let config) = ConfigLoader.load(yaml: yaml, parseDSN: DSNParser.parse) else {
            fatalError("the fuzz target's own config does not load")
        }
        return config.targets[0]
    }()

    private static func dsn(_ text: String) {
        switch DSNParser.parse(text) {
        case .success(let summary):
            check(!summary.host.isEmpty && !summary.port.isEmpty, "a parsed DSN has a host and a port")
        case .failure(let error):
            check(!error.message.isEmpty, "errors say why")
        }
        guard let values = DSNParser.values(of: text) else { return }
        if let hosts = HostResolver.hostsNeedingLookup(values: values) {
            // Every name resolves to two addresses: the lists libpq is given must line up.
            let resolved = HostResolver.resolve(hosts, ports: values["port"]) { _ in .success("127.0.0.1,::1") }
            if case .success(let lists) = resolved, let host = lists.host {
                // Counted in bytes, as libpq does.
                let count = { (list: String) in list.utf8.count { $0 == UInt8(ascii: ",") } }
                check(
                    count(host) == count(lists.hostaddr),
                    "host and hostaddr lists differ in length: \(hosts) -> host \(host), hostaddr \(lists.hostaddr)")
            }
        }
        _ = ConnectionParameters.serverTimeouts(for: target, dsnOptions: values["options"])
    }

    private static let probeConfig: ValidatedConfig = {
        let yaml = """
            targets:
              - name: t
                dsn: host=127.0.0.1 port=5432 dbname=postgres user=u
            modules:
              app:
                user: monitor
                allow: [127.0.0.0/8, "::1", db.example]
            """
        guard case .success(let config) = ConfigLoader.load(yaml: yaml, parseDSN: DSNParser.parse) else {
            fatalError("the fuzz target's own config does not load")
        }
        return config
    }()

    private static let router: ExporterRouter = {
        let config = probeConfig
        let health = TargetHealth(
            name: "t", healthy: true, up: true, state: "up", role: "primary", failure: nil, since: 1,
            latency: .milliseconds(1), consecutiveFailures: 0, loginUp: true, counted: true)
        return ExporterRouter(
            renderMetrics: { Array("pgconn_up{target=\"t\"} 1\n".utf8) },
            isReady: { true },
            health: { HealthSnapshot(targets: [health], policy: HealthPolicy()) },
            events: { target, _ in target == nil || target == "t" ? [] : nil },
            // Nothing is connected: every probe is refused as if too many were running.
            probe: ProbeRoute(config: { config }, start: { _, _, _ in false }),
            version: "fuzz")
    }()

    /// Lines: the method, the path, the query (`k=v&...`, already decoded as libmicrohttpd hands it over), then
    /// headers (`name: value`).
    private static func http(_ bytes: [UInt8]) {
        var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }[...]
        let method = lines.popFirst() ?? ""
        let path = lines.popFirst() ?? "/"
        var query: [String: String] = [:]
        for pair in (lines.popFirst() ?? "").split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            query[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        var headers: [String: String] = [:]
        for line in lines {
            let parts = line.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            headers[parts[0].lowercased()] = parts.count > 1 ? String(parts[1].drop { $0 == " " }) : ""
        }
        let request = HTTPRequest(method: method, path: path, query: query, headers: headers)
        switch router.reply(request) {
        case .response(let response):
            checkResponse(response, to: request)
        case .deferred(let start):
            // Only /probe and /-/reload answer later; with nothing connected a probe is refused at once.
            let answered = Mutex(false)
            start { response in
                answered.withLock { $0 = true }
                checkResponse(response, to: request)
            }
            check(answered.withLock { $0 }, "a deferred answer that nothing would complete: \(method) \(path)")
        }
        _ = ProbePlan.make(
            query: query, scrapeTimeoutHeader: headers["x-prometheus-scrape-timeout-seconds"], config: probeConfig,
            offset: .milliseconds(500))
        _ = ProbeAddress.parse(query["target"] ?? path)
        if let authorization = headers["authorization"], let credentials = BasicCredentials(header: authorization) {
            check(!credentials.user.contains(":"), "the user name ends at the first colon")
        }
    }

    private static func checkResponse(_ response: HTTPResponse, to request: HTTPRequest) {
        check((200..<600).contains(response.status), "status \(response.status) for \(request.method) \(request.path)")
        if response.status == 405 {
            check(response.headers.contains { $0.0 == "Allow" }, "405 without Allow")
        }
    }

    /// The first line is the SQLSTATE (empty: none), the rest the message; a password in it is appended so the
    /// masking is checked whatever surrounds it.
    private static func failure(_ bytes: [UInt8]) {
        let parts = bytes.split(separator: UInt8(ascii: "\n"), maxSplits: 1, omittingEmptySubsequences: false)
        let sqlstate = parts.first.map { String(decoding: $0, as: UTF8.self) }.flatMap { $0.isEmpty ? nil : $0 }
        let message = parts.count > 1 ? String(decoding: parts[1], as: UTF8.self) : ""
        let secret = "Fuzz7secret"
        let failure = FailureClassifier.classify(
            sqlstate: sqlstate, message: message + " password=\(secret) " + message)
        check(!failure.message.utf8.contains(UInt8(ascii: "\n")), "one line: \(failure.message)")
        check(failure.message.count <= FailureClassifier.maxMessageLength + 3, "capped: \(failure.message.count)")
        check(!failure.message.contains(secret), "the password is masked: \(failure.message)")
        if let code = failure.sqlstate { check(code.utf8.count == 5, "a SQLSTATE has five characters: \(code)") }
    }

    /// The escaped value has no raw newline and unescapes to the original bytes.
    private static func labels(_ value: String) {
        var set = LabelSet()
        set.append("target", value)
        let rendered = String(decoding: ExpositionWriter.escapeLabelValue(value).utf8, as: UTF8.self)
        check(!rendered.utf8.contains(UInt8(ascii: "\n")), "no raw newline in a label value")
        var unescaped: [UInt8] = []
        var escaping = false
        for byte in rendered.utf8 {
            if escaping {
                unescaped.append(byte == UInt8(ascii: "n") ? UInt8(ascii: "\n") : byte)
                escaping = false
            } else if byte == UInt8(ascii: "\\") {
                escaping = true
            } else {
                check(byte != UInt8(ascii: "\""), "an unescaped quote would end the value")
                unescaped.append(byte)
            }
        }
        check(!escaping && unescaped == Array(value.utf8), "escaping round-trips")
    }

    private static func duration(_ text: String) {
        guard let duration = try? Duration(prometheus: text) else { return }
        check(duration >= .zero, "\(text) parsed negative")
        check((try? Duration(prometheus: duration.prometheusString)) == duration, "\(text) does not round-trip")
    }
}
