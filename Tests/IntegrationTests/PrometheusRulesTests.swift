import Foundation
import Testing

/// The shipped Prometheus rules, sample configs and dashboards, checked with the real promtool: they load, every
/// alert has unit tests, generated files match their generators, and every dashboard query parses.
@Suite struct PrometheusRulesTests {
    static let rules = repositoryRoot.appendingPathComponent("config/prometheus")
    static let ruleFiles = ["recording.yml", "alerts.yml"].map { rules.appendingPathComponent($0).path }

    static func promtool(_ arguments: [String]) throws -> CommandResult {
        guard FileManager.default.isExecutableFile(atPath: TestPrometheus.promtool) else {
            throw TestPostgresError("no \(TestPrometheus.promtool) (run `make deps`: the Debian package prometheus)")
        }
        return try runCommand(TestPrometheus.promtool, arguments)
    }

    static func python(_ script: String, _ arguments: [String]) throws -> CommandResult {
        try runCommand("/usr/bin/env", ["python3", repositoryRoot.appendingPathComponent(script).path] + arguments)
    }

    /// The alert names in alerts.yml, in file order.
    static func alertNames() throws -> [String] {
        let text = try String(contentsOfFile: rules.appendingPathComponent("alerts.yml").path, encoding: .utf8)
        return text.split(separator: "\n").compactMap { line in
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            return trimmed.hasPrefix("- alert:") ? trimmed.dropFirst("- alert:".count).trimmingCharacters(in: .whitespaces) : nil
        }
    }

    /// Every PromQL expression of the dashboards, with Grafana's variables filled in (`generate.py --queries`).
    static func dashboardQueries() throws -> [(dashboard: String, panel: String, expr: String)] {
        let result = try python("dashboards/generate.py", ["--queries"])
        guard result.status == 0 else { throw TestPostgresError("generate.py --queries: \(result.stderr)") }
        return try result.stdout.split(separator: "\n").map { line in
            guard let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: String],
                let expr = object["expr"]
            else { throw TestPostgresError("generate.py --queries printed \(line)") }
            return (object["dashboard"] ?? "", object["panel"] ?? "", expr)
        }
    }

    @Test func theRuleFilesLoad() throws {
        let result = try Self.promtool(["check", "rules"] + Self.ruleFiles)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }

    @Test func everyAlertFiresAndStaysQuietInItsUnitTests() throws {
        let tests = try FileManager.default.contentsOfDirectory(atPath: Self.rules.appendingPathComponent("tests").path)
            .filter { $0.hasSuffix(".yml") }.sorted().map { Self.rules.appendingPathComponent("tests/\($0)").path }
        #expect(!tests.isEmpty)
        let result = try Self.promtool(["test", "rules"] + tests)
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
        let text = try tests.map { try String(contentsOfFile: $0, encoding: .utf8) }.joined(separator: "\n")
        let names = try Self.alertNames()
        #expect(names.count >= 10, "\(names)")
        for name in names {
            // One case where it fires and one where it does not: the name is evaluated at least twice.
            let cases = text.components(separatedBy: "alertname: \(name)\n").count - 1
            #expect(cases >= 2, "\(name) is evaluated in \(cases) unit test case(s)")
        }
    }

    @Test func theSamplePrometheusConfigIsValid() throws {
        let result = try Self.promtool(["check", "config", Self.rules.appendingPathComponent("prometheus.yml").path])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }

    @Test func generatedFilesMatchTheirGenerators() throws {
        for script in ["config/prometheus/generate-kubernetes.py", "dashboards/generate.py"] {
            let result = try Self.python(script, ["--check"])
            #expect(result.status == 0, "\(script) --check: \(result.stdout)\(result.stderr)")
        }
    }

    @Test func everyDashboardQueryParses() throws {
        let queries = try Self.dashboardQueries()
        #expect(queries.count >= 30, "\(queries.count) queries")
        // promtool parses a rule's expression when it checks the rule file: one recording rule per query.
        var file = "groups:\n  - name: dashboard-queries\n    rules:\n"
        for (index, query) in queries.enumerated() {
            file += "      - record: dashboard_query_\(index)\n        expr: |\n"
            file += query.expr.split(separator: "\n", omittingEmptySubsequences: false).map { "          \($0)\n" }
                .joined()
        }
        let directory = try TemporaryDirectory()
        let path = try directory.write("queries.yml", file)
        let result = try Self.promtool(["check", "rules", path])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }
}
