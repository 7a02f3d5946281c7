import Synchronization
import Testing

@testable import PGConnCore

@testable import PGConnHTTP

/// A readiness flag the test flips while the server reads it.
private final class Readiness: Sendable {
    let flag = Atomic<Bool>(false)
}

/// A router over fixed snapshots, served by a real server on loopback.
private final class RouterFixture: Sendable {
    let ready = Readiness()
    let server: HTTPServer

    init(
        telemetryPath: String = "/metrics", targets: [TargetHealth] = [],
        events: [(target: String, event: TargetEvent)] = []
    ) throws {
        let ready = self.ready
        let router = ExporterRouter(
            telemetryPath: telemetryPath,
            renderMetrics: { Array("pgconn_up{target=\"a\"} 1\n".utf8) },
            isReady: { ready.flag.load(ordering: .relaxed) },
            health: { HealthSnapshot(targets: targets, policy: HealthPolicy()) },
            events: { _, _ in events },
            version: "1.2.3"
        )
        server = HTTPServer(listenAddress: "127.0.0.1:0", handler: router.handle)
        try server.start()
    }

    func send(_ target: String) throws -> RawHTTPResponse {
        try RawHTTPClient.send(port: server.boundPort, target: target)
    }

    func send(_ method: String, _ target: String) throws -> RawHTTPResponse {
        try RawHTTPClient.send(port: server.boundPort, method: method, target: target)
    }
}

@Suite struct ExporterRouterTests {
    @Test func metricsAreServedInTheTextFormat() throws {
        let fixture = try RouterFixture()
        defer { fixture.server.stop() }
        let response = try fixture.send("/metrics")
        #expect(response.status == 200)
        #expect(response.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8")
        #expect(response.text == "pgconn_up{target=\"a\"} 1\n")
    }

    @Test func telemetryPathIsConfigurable() throws {
        let fixture = try RouterFixture(telemetryPath: "/internal/metrics")
        defer { fixture.server.stop() }
        #expect(try fixture.send("/internal/metrics").status == 200)
        #expect(try fixture.send("/metrics").status == 404)
    }

    @Test func healthyAlwaysAnswers200() throws {
        let fixture = try RouterFixture()
        defer { fixture.server.stop() }
        let response = try fixture.send("/-/healthy")
        #expect(response.status == 200)
        #expect(response.text == "Healthy\n")
        #expect(response.header("Content-Type") == "text/plain; charset=utf-8")
    }

    @Test func readyFollowsTheReadinessSnapshot() throws {
        let fixture = try RouterFixture()
        defer { fixture.server.stop() }
        let before = try fixture.send("/-/ready")
        #expect(before.status == 503)
        #expect(before.text == "Not ready: waiting for the config and a first probe of every target\n")
        fixture.ready.flag.store(true, ordering: .relaxed)
        let after = try fixture.send("/-/ready")
        #expect(after.status == 200)
        #expect(after.text == "Ready\n")
    }

    static func health(_ name: String, healthy: Bool, failure: Failure? = nil) -> TargetHealth {
        TargetHealth(
            name: name, healthy: healthy, up: healthy, state: healthy ? "up" : "backoff", role: healthy ? "primary" : nil,
            failure: failure, since: 1, latency: .microseconds(1500), consecutiveFailures: healthy ? 0 : 3, loginUp: nil,
            counted: true)
    }

    @Test func statusPageListsLinksAndEscapedTargetsFailingFirst() throws {
        let refused = Failure(reason: .refused, message: "Connection refused <b>")
        let fixture = try RouterFixture(targets: [
            Self.health("primary", healthy: true),
            Self.health("<script>x</script>&\"'", healthy: false, failure: refused),
        ])
        defer { fixture.server.stop() }
        let response = try fixture.send("/")
        #expect(response.status == 200)
        #expect(response.header("Content-Type") == "text/html; charset=utf-8")
        let page = response.text
        #expect(page.contains("<title>pgconn_exporter</title>"))
        #expect(page.contains("Version: 1.2.3"))
        for link in ["/metrics", "/health", "/api/v1/events", "/-/healthy", "/-/ready"] {
            #expect(page.contains("<a href=\"\(link)\">"), "\(link)")
        }
        #expect(page.contains("2 targets, <span class=\"down\">1 failing</span>"))
        let escaped = "&lt;script&gt;x&lt;/script&gt;&amp;&quot;&#39;"
        let failingRow = try #require(page.range(of: "<tr data-name=\"\(escaped)\">"))
        let healthyRow = try #require(page.range(of: "<tr data-name=\"primary\">"))
        #expect(failingRow.lowerBound < healthyRow.lowerBound, "failing targets first")
        #expect(page.contains(#"<td class="down">backoff</td>"#))
        #expect(page.contains(#"title="Connection refused &lt;b&gt;">refused</td>"#))
        #expect(page.contains(#"<td class="up">up</td><td>primary</td><td>1.5ms</td>"#))
        #expect(!page.contains("<script>x"))
    }

    @Test func statusPageSaysWhenThereAreNoTargets() throws {
        let fixture = try RouterFixture()
        defer { fixture.server.stop() }
        #expect(try fixture.send("/").text.contains("No targets configured."))
    }

    @Test func unknownPathIs404() throws {
        let fixture = try RouterFixture()
        defer { fixture.server.stop() }
        let response = try fixture.send("/nope")
        #expect(response.status == 404)
        #expect(response.text == "Not found: /nope\n")
        #expect(response.header("Content-Type") == "text/plain; charset=utf-8")
    }

    @Test(arguments: ["/metrics", "/-/healthy", "/-/ready", "/"])
    func otherMethodsOnAKnownPathAre405WithAllow(path: String) throws {
        let fixture = try RouterFixture()
        defer { fixture.server.stop() }
        let response = try fixture.send("POST", path)
        #expect(response.status == 405)
        #expect(response.header("Allow") == "GET, HEAD")
        #expect(response.text == "Method not allowed: POST \(path); allowed: GET, HEAD\n")
    }

    @Test func headOnMetricsSendsTheLengthWithoutTheBody() throws {
        let fixture = try RouterFixture()
        defer { fixture.server.stop() }
        let response = try fixture.send("HEAD", "/metrics")
        #expect(response.status == 200)
        #expect(response.body.isEmpty)
        #expect(response.header("Content-Type") == "text/plain; version=0.0.4; charset=utf-8")
        #expect(response.header("Content-Length") == String(try fixture.send("/metrics").body.count))
    }

    @Test(arguments: [
        ("plain", "plain"),
        ("a<b>&c", "a&lt;b&gt;&amp;c"),
        ("\"quoted\" 'single'", "&quot;quoted&quot; &#39;single&#39;"),
        ("é✓", "é✓"),
    ])
    func escapesHTML(text: String, escaped: String) {
        #expect(ExporterRouter.escape(text) == escaped)
    }
}
