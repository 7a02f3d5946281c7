import Foundation
import Testing

/// `/health` and `/health/<target>` as curl, a load balancer and Kubernetes call them: the real binary, a real
/// PostgreSQL, real HTTP.
@Suite(.serialized) struct HealthEndpointTests {
    /// Starts the exporter with `health` and two targets: `primary` (the test server) and `missing` (a closed
    /// port), and waits until both have reported.
    func start(
        _ server: TestPostgres, health: String, directory: TemporaryDirectory
    ) throws -> (ExporterProcess, Int) {
        let config = try directory.write(
            "config.yml",
            """
            defaults:
              probe_interval: 200ms
              login_interval: 1s
              backoff: {initial: 50ms, max: 200ms}
            health: \(health)
            targets:
              - name: primary
                dsn: "\(server.dsn(password: TestPostgres.superuserPassword))"
              - name: missing
                dsn: host=127.0.0.1 port=\(TestPostgres.freePort()) user=postgres
            """)
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)"], directory: directory)
        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/-/ready").status == 200 }
        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/health/primary").status == 200 }
        return (exporter, port)
    }

    @Test func statusCodesAndBodiesFollowThePolicyAndTheRole() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let directory = try TemporaryDirectory()
        let (exporter, port) = try start(server, health: "{require: all}", directory: directory)
        defer { exporter.kill() }

        let all = try httpGet(port: port, path: "/health")
        #expect(all.status == 503, "missing is down and every target counts")
        let lines = all.body.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines[0].hasPrefix("primary up ") && lines[0].contains(" role=primary since 20"), "\(lines[0])")
        #expect(lines[1].hasPrefix("missing down reason=refused sqlstate= since 20"), "\(lines[1])")
        #expect(all.headers["content-type"]?.hasPrefix("text/plain") == true)

        let cases: [(String, Int)] = [
            ("/health/primary", 200), ("/health/primary?role=primary", 200), ("/health/primary?role=standby", 503),
            ("/health/missing", 503), ("/health/missing?role=primary", 503), ("/health/nope", 404),
            ("/health/primary?role=leader", 400), ("/health?format=yaml", 400),
        ]
        for (path, status) in cases {
            #expect(try httpGet(port: port, path: path).status == status, "\(path)")
        }

        let json = try httpGet(port: port, path: "/health", headers: ["Accept": "application/json"])
        #expect(json.status == 503 && json.headers["content-type"] == "application/json")
        #expect(json.body.hasPrefix(#"{"healthy":false,"require":"all","targets":[{"name":"primary","healthy":true"#))
        #expect(json.body.contains(#""name":"missing","healthy":false,"up":false,"state":"backoff""#))
        #expect(json.body.contains(#""reason":"refused""#))
        let formatted = try httpGet(port: port, path: "/health/primary?format=json")
        #expect(formatted.status == 200 && formatted.body.hasPrefix(#"{"healthy":true,"#))

        let head = try httpRequest(method: "HEAD", port: port, path: "/health/primary")
        #expect(head.status == 200 && head.body.isEmpty)
        #expect(try httpRequest(method: "POST", port: port, path: "/health").status == 405)

        // A health check costs a snapshot, not a query: time a few hundred of them.
        let clock = ContinuousClock()
        let start = clock.now
        for _ in 0..<200 { _ = try httpGet(port: port, path: "/health") }
        print("/health: \(((clock.now - start) / 200).milliseconds) ms per request (connection setup included)")
    }

    @Test func onlyTheListedTargetsCountAndLoginChecksCanBeRequired() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let directory = try TemporaryDirectory()
        let (exporter, port) = try start(server, health: "{targets: [primary], login: true}", directory: directory)
        defer { exporter.kill() }
        // With login: true the primary is healthy once its first login check (within 1 s) has passed.
        try eventually(timeout: .seconds(10)) { try httpGet(port: port, path: "/health").status == 200 }
        let json = try httpGet(port: port, path: "/health?format=json").body
        #expect(json.contains(#""name":"primary","healthy":true"#) && json.contains(#""login_up":true,"counted":true"#))
        #expect(json.contains(#""name":"missing","healthy":false"#) && json.contains(#""counted":false"#))
    }
}
