import Foundation
import PGConnSync
import Synchronization
import Testing

/// The dashboards and alerts against a real Prometheus scraping a real exporter that watches a real PostgreSQL
/// through real faults: a terminated backend, an immediate stop and start, a revoked password. Every dashboard
/// query must return data afterwards, the target-down and logins-failing alerts must fire and resolve, and every
/// metric name the dashboards and rules use must be on the exporter's real `/metrics`.
@Suite(.serialized) struct PrometheusEndToEndTests {
    /// The alert rules with every `for:` shortened, so a fault fires within seconds (the test config only).
    static func shortenedAlerts() throws -> String {
        let text = try String(
            contentsOf: PrometheusRulesTests.rules.appendingPathComponent("alerts.yml"), encoding: .utf8)
        return text.split(separator: "\n", omittingEmptySubsequences: false).map { line in
            let trimmed = line.drop { $0 == " " }
            guard trimmed.hasPrefix("for:") else { return String(line) }
            return String(repeating: " ", count: line.count - trimmed.count) + "for: 2s"
        }.joined(separator: "\n")
    }

    /// Alert states seen over time, by alert name: when each was first pending, first firing, last seen.
    final class AlertLog: Sendable {
        struct Entry: Sendable {
            var pending: Duration?
            var firing: Duration?
            var lastSeen: Duration
        }

        private let entries = Lock<[String: Entry]>([:])
        let started = ContinuousClock.now

        func record(_ alerts: [(name: String, state: String, labels: [String: String])]) {
            let now = ContinuousClock.now - started
            entries.withLock { entries in
                for alert in alerts {
                    var entry = entries[alert.name] ?? Entry(lastSeen: now)
                    if alert.state == "pending", entry.pending == nil { entry.pending = now }
                    if alert.state == "firing", entry.firing == nil { entry.firing = now }
                    entry.lastSeen = now
                    entries[alert.name] = entry
                }
            }
        }

        var snapshot: [String: Entry] { entries.withLock { $0 } }
    }

    @Test func dashboardsAndAlertsWorkThroughRealFaults() throws {
        let clock = ContinuousClock()
        let began = clock.now
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        _ = try server.psql("CREATE ROLE app_user LOGIN PASSWORD 'first-password'")
        let directory = try TemporaryDirectory()
        let passwordFile = try directory.write("app.password", "first-password\n")
        let config = try directory.write(
            "config.yml",
            """
            defaults:
              probe_interval: 500ms
              probe_timeout: 400ms
              connect_timeout: 2s
              login_interval: 1s
              backoff: {initial: 100ms, max: 500ms}
            targets:
              - name: primary
                dsn: "\(server.dsn(password: TestPostgres.superuserPassword))"
                labels: {cluster: e2e}
              - name: app
                dsn: host=127.0.0.1 port=\(server.port) user=app_user dbname=postgres
                password_file: \(passwordFile)
                labels: {cluster: e2e}
            """)
        let exporterPort = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(exporterPort)"],
            directory: directory)
        defer { exporter.kill() }

        let recording = try String(
            contentsOf: PrometheusRulesTests.rules.appendingPathComponent("recording.yml"), encoding: .utf8)
        let prometheus = try TestPrometheus.start(
            config: { _ in
                """
                global: {scrape_interval: 1s, evaluation_interval: 1s}
                rule_files: [recording.yml, alerts.yml]
                scrape_configs:
                  - job_name: pgconn_exporter
                    static_configs: [{targets: ["127.0.0.1:\(exporterPort)"]}]
                """
            }, files: ["recording.yml": recording, "alerts.yml": try Self.shortenedAlerts()])
        defer { prometheus.cleanup() }

        let log = AlertLog()
        let polling = Atomic<Bool>(true)
        let poller = JoinableThread(name: "alert-poller") {
            while polling.load(ordering: .relaxed) {
                if let alerts = try? prometheus.alerts() { log.record(alerts) }
                Thread.sleep(forTimeInterval: 0.25)
            }
        }
        defer {
            polling.store(false, ordering: .relaxed)
            poller.join()
        }
        func value(_ expression: String) -> Double? { (try? prometheus.query(expression))?.first?.value }
        func firing(_ name: String) -> Bool { log.snapshot[name]?.firing != nil }
        func active(_ name: String) throws -> Bool { try prometheus.alerts().contains { $0.name == name } }

        try eventually(timeout: .seconds(30)) { value("sum(pgconn_up)") == 2 }
        let steady = clock.now - began
        // `make dashboard-images` holds each phase longer, so the pictures show more than a blip (not a wait for
        // a condition: every assertion below awaits its own).
        let pause = Double(ProcessInfo.processInfo.environment["PGCONN_DASHBOARD_PAUSE"] ?? "") ?? 0
        func hold() { if pause > 0 { Thread.sleep(forTimeInterval: pause) } }
        hold()

        // 1. A terminated backend: counted as a disconnect, the session back at once.
        _ = try server.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgconn_exporter'")
        try eventually(timeout: .seconds(15)) {
            value(#"sum(pgconn_disconnects_total{reason="admin_shutdown"})"#) ?? 0 >= 2
        }
        hold()

        // 2. An immediate stop, long enough for the down alert to fire, then a start: the alert resolves.
        try server.stopImmediate()
        let stopped = clock.now - began
        try eventually(timeout: .seconds(30)) { firing(AlertNames.targetDown) }
        hold()
        try server.start()
        try eventually(timeout: .seconds(30)) { try !active(AlertNames.targetDown) && value("sum(pgconn_up)") == 2 }
        let restarted = clock.now - began
        hold()

        // 3. A revoked password: the session stays up, fresh logins fail; the password file follows the new
        // password, which the exporter notices, and the alert resolves.
        _ = try server.psql("ALTER ROLE app_user PASSWORD 'second-password'")
        try eventually(timeout: .seconds(30)) { firing(AlertNames.loginsFailing) }
        #expect(value(#"pgconn_up{target="app"}"#) == 1, "the session survives a password change")
        hold()
        try Data("second-password\n".utf8).write(to: URL(fileURLWithPath: passwordFile))
        try eventually(timeout: .seconds(30)) { try !active(AlertNames.loginsFailing) }
        let faultsDone = clock.now - began
        hold()

        // Every dashboard query returns data now (after 5 minutes of range at most: `$__range` is 5m).
        let queries = try PrometheusRulesTests.dashboardQueries()
        var empty: [String] = []
        for query in queries where try prometheus.query(query.expr).isEmpty {
            empty.append("\(query.dashboard) / \(query.panel): \(query.expr)")
        }
        #expect(empty.isEmpty, "queries without data:\n\(empty.joined(separator: "\n"))")
        if let output = ProcessInfo.processInfo.environment["PGCONN_DASHBOARD_DATA"], !output.isEmpty {
            try Self.dumpRanges(
                of: queries.map(\.expr), from: prometheus, seconds: (clock.now - began).components.seconds + 5,
                to: output)
        }

        // Every metric name the dashboards and rules use is on the real /metrics page (or a recording rule, or
        // one of Prometheus' own series).
        let page = try httpGet(port: exporterPort, path: "/metrics").body
        // Sample names, and the families declared with `# TYPE` (a family without samples on this page, such
        // as the TLS or failover ones for these plain single-host targets, is still exported).
        let exported = Set(
            page.split(separator: "\n").compactMap { line -> String? in
                if line.hasPrefix("# TYPE ") { return line.split(separator: " ").dropFirst(2).first.map(String.init) }
                if line.hasPrefix("#") { return nil }
                return line.split(whereSeparator: { $0 == "{" || $0 == " " }).first.map(String.init)
            })
        let recorded = Set(
            recording.split(separator: "\n").compactMap { line -> String? in
                let trimmed = line.trimmingCharacters(in: .whitespaces)
                return trimmed.hasPrefix("- record:")
                    ? trimmed.dropFirst("- record:".count).trimmingCharacters(in: .whitespaces) : nil
            })
        let prometheusOwn: Set<String> = ["up", "scrape_duration_seconds", "ALERTS", "ALERTS_FOR_STATE"]
        let alertsText = try String(
            contentsOf: PrometheusRulesTests.rules.appendingPathComponent("alerts.yml"), encoding: .utf8)
        let used = Self.metricNames(
            in: queries.map(\.expr) + Self.ruleExpressions(recording) + Self.ruleExpressions(alertsText))
        let unknown = used.subtracting(exported).subtracting(recorded).subtracting(prometheusOwn)
        #expect(unknown.isEmpty, "names used but not exported: \(unknown.sorted())")
        #expect(used.contains("pgconn_up") && used.count > 20, "\(used.sorted())")

        let alerts = log.snapshot
        for (name, entry) in alerts.sorted(by: {
            ($0.value.pending ?? $0.value.lastSeen) < ($1.value.pending ?? $1.value.lastSeen)
        }) {
            print(
                "alert \(name): pending \(entry.pending.map { "\($0)" } ?? "-"), firing \(entry.firing.map { "\($0)" } ?? "-"), "
                    + "last seen \(entry.lastSeen) (clock from the poller's start)")
        }
        print(
            "end-to-end: steady after \(steady), stopped at \(stopped), back at \(restarted), faults done at "
                + "\(faultsDone), \(queries.count) dashboard queries checked, total \(clock.now - began)")
    }

    /// `make dashboard-images`: every query's range over the run (1 s steps) as JSON, for
    /// dashboards/render_images.py: `{"start": <unix s>, "end": <unix s>, "step": 1, "series": {<expr>: [{"metric":
    /// {...}, "values": [[<unix s>, "<value>"], ...]}, ...]}}`.
    static func dumpRanges(of expressions: [String], from prometheus: TestPrometheus, seconds: Int64, to path: String)
        throws
    {
        let end = Date().timeIntervalSince1970.rounded(.down)
        let start = end - Double(seconds)
        var series: [String: Any] = [:]
        for expression in Set(expressions) {
            let data =
                try prometheus.api(
                    "query_range",
                    [("query", expression), ("start", String(start)), ("end", String(end)), ("step", "1")])
                as? [String: Any]
            series[expression] = data?["result"] ?? []
        }
        let document: [String: Any] = ["start": start, "end": end, "step": 1, "series": series]
        let json = try JSONSerialization.data(withJSONObject: document, options: [.sortedKeys])
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        try json.write(to: URL(fileURLWithPath: path).appendingPathComponent("ranges.json"))
        print("dashboard data: \(series.count) queries over \(seconds) s written to \(path)/ranges.json")
    }

    /// Metric names in PromQL expressions: `pgconn_*`, `process_*`, and recording rules' names (`a:b:c`), with a
    /// histogram's `_bucket`, `_sum` and `_count` kept as written (the page has them). String literals (label
    /// values such as `job="pgconn_exporter"`) are left out.
    static func metricNames(in expressions: [String]) -> Set<String> {
        let literal = try! NSRegularExpression(pattern: #""[^"]*"|'[^']*'"#)
        let name = try! NSRegularExpression(
            pattern: #"\b(pgconn_[a-z0-9_]+|process_[a-z_]+|[a-z_]+:[a-z0-9_]+:[a-z0-9_]+)\b"#)
        var names = Set<String>()
        for expression in expressions {
            let bare = literal.stringByReplacingMatches(
                in: expression, range: NSRange(expression.startIndex..., in: expression), withTemplate: "\"\"")
            for match in name.matches(in: bare, range: NSRange(bare.startIndex..., in: bare)) {
                if let found = Range(match.range, in: bare) { names.insert(String(bare[found])) }
            }
        }
        return names
    }

    /// The `expr:` of every rule in a rule file: on the line itself, or the indented lines of a block after it.
    static func ruleExpressions(_ text: String) -> [String] {
        var expressions: [String] = []
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        var index = 0
        while index < lines.count {
            let line = lines[index]
            index += 1
            guard let range = line.range(of: "expr:") else { continue }
            let rest = line[range.upperBound...].trimmingCharacters(in: .whitespaces)
            guard rest.isEmpty || rest.hasPrefix("|") || rest.hasPrefix(">") else {
                expressions.append(rest)
                continue
            }
            let indent = line.prefix { $0 == " " }.count
            var block: [String] = []
            while index < lines.count,
                lines[index].trimmingCharacters(in: .whitespaces).isEmpty
                    || lines[index].prefix(while: { $0 == " " }).count > indent
            {
                block.append(lines[index])
                index += 1
            }
            expressions.append(block.joined(separator: "\n"))
        }
        return expressions
    }
}

/// The alerts the end-to-end test drives, by their names in config/prometheus/alerts.yml.
enum AlertNames {
    static let targetDown = "PgconnTargetDown"
    static let loginsFailing = "PgconnLoginFailing"
}
