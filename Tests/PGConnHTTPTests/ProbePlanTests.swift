import Testing

@testable import PGConnCore
@testable import PGConnHTTP

/// `/probe` requests checked before anything connects: the subject, the budget from the scrape-timeout header,
/// and the 400/403/404 answers.
struct ProbePlanTests {
    static let config: ValidatedConfig = {
        let yaml = """
            targets:
              - {name: db, dsn: "host=db1", connect_timeout: 3s, probe_timeout: 1s}
            modules:
              app: {user: monitor, timeout: 4s, allow: ["db-*.example.com", "10.0.0.0/8"], ports: [5432]}
            """
        let summary = DSNSummary(host: "db1", port: "5432", database: "postgres", user: "monitor", sslmode: "prefer")
        return try! ConfigLoader.load(yaml: yaml, parseDSN: { _ in .success(summary) }).get()
    }()

    static func plan(_ query: [String: String], header: String? = nil) -> Result<ProbePlan, Refusal> {
        ProbePlan.make(query: query, scrapeTimeoutHeader: header, config: config, offset: .milliseconds(500))
    }

    static func status(_ query: [String: String], header: String? = nil) -> Int? {
        if case .failure(let refusal) = plan(query, header: header) { return refusal.response.status }
        return nil
    }

    @Test func aConfiguredTargetGetsItsConnectAndProbeTimeoutsWithoutAHeader() throws {
        let plan = try Self.plan(["target": "db"]).get()
        #expect(plan.subject == .configured("db"))
        #expect(plan.timeout == .seconds(4))
        #expect(plan.debug == false)
    }

    @Test func theHeaderMinusTheOffsetIsTheBudgetCappedByTheModule() throws {
        let query = ["target": "db-1.example.com", "module": "app"]
        #expect(try Self.plan(query, header: "2").get().timeout == .milliseconds(1500))
        #expect(try Self.plan(query, header: "10").get().timeout == .seconds(4), "capped by the module's timeout")
        #expect(try Self.plan(query, header: "0.6").get().timeout == .milliseconds(300), "at least half the header")
        #expect(try Self.plan(query, header: " 3.5 ").get().timeout == .seconds(3))
        let plan = try Self.plan(query).get()
        #expect(plan.subject == .discovered(module: Self.config.modules[0], address: ProbeAddress(host: "db-1.example.com", port: 5432)))
        #expect(Self.config.modules[0].name == "app")
        #expect(plan.timeout == .seconds(4))
        #expect(plan.description == "db-1.example.com:5432 with module app")
    }

    @Test(
        arguments: [
            (["target": "db", "debug": "true"], nil),
            ([:], 400), (["target": ""], 400), (["target": "nope"], 404),
            (["target": "db-1.example.com", "module": "nope"], 400),
            (["target": "db-1.example.com:6432", "module": "app"], 403),  // port outside ports
            (["target": "other.example.com", "module": "app"], 403),
            (["target": "11.0.0.1", "module": "app"], 403),
            (["target": "10.1.2.3", "module": "app"], nil),
            (["target": "10.1.2.3 sslmode=disable", "module": "app"], 400),
            (["target": "db", "debug": "1"], 400),
        ] as [([String: String], Int?)])
    func requestsAreCheckedBeforeAnythingConnects(query: [String: String], status: Int?) {
        #expect(Self.status(query) == status, "\(query)")
    }

    @Test(arguments: ["soon", "0", "-1", "nan", "inf", ""])
    func aMalformedHeaderIsABadRequest(header: String) {
        #expect(Self.status(["target": "db"], header: header) == 400)
    }

    @Test func refusalsSayWhy() {
        guard case .failure(let refusal) = Self.plan(["target": "other.example.com", "module": "app"]) else {
            Issue.record("expected a refusal")
            return
        }
        #expect(
            String(decoding: refusal.response.body, as: UTF8.self).hasPrefix(
                "Forbidden: other.example.com:5432 is not allowed by module app"))
        guard case .failure(let unknown) = Self.plan(["target": "x", "module": "nope"]) else { return }
        #expect(String(decoding: unknown.response.body, as: UTF8.self).contains("(configured: app)"))
    }
}
