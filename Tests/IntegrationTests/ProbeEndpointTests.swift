import Foundation
import PGConnSync
import Synchronization
import Testing

/// `/probe` as Prometheus calls it: the real binary, a real PostgreSQL, a silent host, real HTTP.
@Suite(.serialized) struct ProbeEndpointTests {
    static let passwordVariable = "PGCONN_TEST_PROBE_PASSWORD"

    /// The exporter with `primary` (the test server), `silent` (a listener that never answers) and two modules:
    /// `local` allows 127.0.0.1, `names` allows only a name pattern.
    func start(
        _ server: TestPostgres, silent: BlackholeListener, directory: TemporaryDirectory, arguments: [String] = []
    ) throws -> (ExporterProcess, Int) {
        let config = try directory.write(
            "config.yml",
            """
            defaults:
              probe_interval: 1s
              login_interval: 0s
            targets:
              - name: primary
                dsn: "\(server.dsn(password: TestPostgres.superuserPassword))"
              - name: silent
                dsn: host=127.0.0.1 port=\(silent.port) user=postgres
                connect_timeout: 30s
                probe_timeout: 1s
            modules:
              local:
                user: postgres
                database: postgres
                password_env: \(Self.passwordVariable)
                timeout: 10s
                allow: ["127.0.0.1/32"]
              names:
                user: postgres
                allow: ["db-*.example.invalid"]
            """)
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)"] + arguments,
            directory: directory, environment: [Self.passwordVariable: TestPostgres.superuserPassword])
        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/-/healthy").status == 200 }
        return (exporter, port)
    }

    /// The value of an unlabelled sample, or of the first sample of `name` with labels.
    static func value(_ name: String, in body: String) -> Double? {
        for line in body.split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2 else { continue }
            if parts[0] == name || parts[0].hasPrefix(name + "{") { return Double(parts[1]) }
        }
        return nil
    }

    func probeBackends(_ server: TestPostgres) throws -> String {
        try server.psql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgconn_exporter_probe'")
    }

    @Test func configuredAndModuleTargetsAreProbedOnFreshConnectionsThatClose() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let silent = try BlackholeListener()
        let directory = try TemporaryDirectory()
        let (exporter, port) = try start(server, silent: silent, directory: directory)
        defer { exporter.kill() }

        let configured = try httpGet(port: port, path: "/probe?target=primary")
        #expect(configured.status == 200)
        #expect(configured.headers["content-type"]?.hasPrefix("text/plain; version=0.0.4") == true)
        #expect(Self.value("probe_success", in: configured.body) == 1, "\(configured.body)")
        #expect(Self.value("probe_server_in_recovery", in: configured.body) == 0)
        #expect(configured.body.contains("probe_server_info{server_version=\""))
        #expect(!configured.body.contains("probe_failure_info"))
        let families = configured.body.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }
        #expect(families.allSatisfy { $0.hasPrefix("# TYPE probe_") }, "only probe_* families: \(families)")

        let module = try httpGet(port: port, path: "/probe?target=127.0.0.1:\(server.port)&module=local")
        #expect(module.status == 200)
        #expect(Self.value("probe_success", in: module.body) == 1, "\(module.body)")
        // Each probe closed its connection: no backend of the exporter's probes is left on the server.
        try eventually(timeout: .seconds(5)) { try probeBackends(server) == "0" }

        // The latency of a probe against a live target, as Prometheus would see it (connection setup included).
        var samples: [Duration] = []
        let clock = ContinuousClock()
        for _ in 0..<30 {
            let start = clock.now
            let answer = try httpGet(port: port, path: "/probe?target=primary")
            samples.append(clock.now - start)
            #expect(Self.value("probe_success", in: answer.body) == 1)
        }
        samples.sort()
        print(
            "/probe live target: p50 \(samples[15].milliseconds) ms, max \(samples.last!.milliseconds) ms (30 probes)")

        let debug = try httpGet(port: port, path: "/probe?target=primary&debug=true")
        #expect(debug.status == 200 && debug.body.hasPrefix("Probe of target primary\n\nTrace:\n"), "\(debug.body)")
        #expect(debug.body.contains("connected to 127.0.0.1:"), "the server libpq reached")
        #expect(debug.body.contains(", server_version "))
        #expect(debug.body.contains("Metrics that would have been returned:\n"))
        #expect(!debug.body.contains(TestPostgres.superuserPassword))

        let head = try httpRequest(method: "HEAD", port: port, path: "/probe?target=primary")
        #expect(head.status == 200 && head.body.isEmpty)

        // A closed port inside allow is probed, and fails with its reason.
        let wrong = try httpGet(port: port, path: "/probe?target=127.0.0.1:\(TestPostgres.freePort())&module=local")
        #expect(Self.value("probe_success", in: wrong.body) == 0)
        #expect(wrong.body.contains("probe_failure_info{reason=\"refused\"} 1"), "\(wrong.body)")
    }

    @Test func badRequestsAreRefusedWithoutConnecting() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let silent = try BlackholeListener()
        let directory = try TemporaryDirectory()
        let (exporter, port) = try start(server, silent: silent, directory: directory)
        defer { exporter.kill() }
        try eventually(timeout: .seconds(10)) { silent.acceptedCount == 1 }  // the silent target's session

        let cases: [(String, Int)] = [
            ("/probe", 400),
            ("/probe?target=", 400),
            ("/probe?target=nope", 404),
            ("/probe?target=127.0.0.1:\(silent.port)&module=nope", 400),
            ("/probe?target=127.0.0.1:\(silent.port)&module=names", 403),  // outside allow: no connect
            ("/probe?target=127.0.0.1:99999&module=local", 400),
            ("/probe?target=127.0.0.1%20sslmode%3Ddisable&module=local", 400),  // DSN injection
            ("/probe?target=primary&debug=yes", 400),
        ]
        for (path, status) in cases {
            let answer = try httpGet(port: port, path: path)
            #expect(answer.status == status, "\(path): \(answer.status) \(answer.body)")
        }
        let forbidden = try httpGet(port: port, path: "/probe?target=127.0.0.1:\(silent.port)&module=names")
        #expect(forbidden.body.hasPrefix("Forbidden: 127.0.0.1:\(silent.port) is not allowed by module names"))
        let header = try httpGet(
            port: port, path: "/probe?target=primary", headers: ["X-Prometheus-Scrape-Timeout-Seconds": "soon"])
        #expect(header.status == 400)
        #expect(try httpRequest(method: "POST", port: port, path: "/probe?target=primary").status == 405)
        #expect(silent.acceptedCount == 1, "only the silent target's own session connected")
    }

    @Test func aSilentHostAnswersWithinTheScrapeTimeoutWhileMetricsAndHealthKeepAnswering() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let silent = try BlackholeListener()
        let directory = try TemporaryDirectory()
        let (exporter, port) = try start(
            server, silent: silent, directory: directory, arguments: ["--probe.max-concurrent=4"])
        defer { exporter.kill() }
        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/health/primary").status == 200 }

        try eventually(timeout: .seconds(10)) { silent.acceptedCount == 1 }  // the silent target's session
        // Four probes of the silent host with a 2 s scrape timeout (1.5 s budget) hang together (they join one
        // run, so the host sees one probe connection)...
        let answers = Lock<[(status: Int, body: String, elapsed: Duration)]>([])
        let clock = ContinuousClock()
        let threads = (0..<4).map { index in
            JoinableThread(name: "probe-\(index)") {
                let start = clock.now
                let answer = try? httpGet(
                    port: port, path: "/probe?target=silent", headers: ["X-Prometheus-Scrape-Timeout-Seconds": "2"],
                    timeout: .seconds(10))
                answers.withLock { $0.append((answer?.status ?? 0, answer?.body ?? "", clock.now - start)) }
            }
        }
        // ...while /metrics and /health answer: a /metrics page that counts probes in progress was served while
        // they hung.
        try eventually(timeout: .seconds(2), poll: .milliseconds(5)) {
            let page = try httpGet(port: port, path: "/metrics", timeout: .seconds(1)).body
            return Self.value("pgconn_exporter_probes_in_progress", in: page) == 4
        }
        var metricsLatencies: [Duration] = []
        for _ in 0..<10 {
            let start = clock.now
            #expect(try httpGet(port: port, path: "/metrics", timeout: .seconds(1)).status == 200)
            #expect(try httpGet(port: port, path: "/health/primary", timeout: .seconds(1)).status == 200)
            metricsLatencies.append(clock.now - start)
        }
        // A fifth probe while four are in progress is turned away.
        let rejected = try httpGet(port: port, path: "/probe?target=primary")
        #expect(rejected.status == 429)
        for thread in threads { thread.join() }

        let results = answers.withLock { $0 }
        #expect(results.count == 4)
        for result in results {
            #expect(result.status == 200)
            #expect(Self.value("probe_success", in: result.body) == 0)
            #expect(result.body.contains("probe_failure_info{reason=\"timeout\"} 1"), "\(result.body)")
            #expect(result.elapsed < .seconds(2), "answered within the scrape timeout: \(result.elapsed)")
            #expect(
                result.elapsed >= .milliseconds(1400), "the budget is the header minus the offset: \(result.elapsed)")
            if let duration = Self.value("probe_duration_seconds", in: result.body) {
                #expect(abs(duration - 1.5) < 0.1, "probe_duration_seconds \(duration)")
            }
        }
        metricsLatencies.sort()
        print(
            "/probe silent target (header 2s): \(results.map { $0.elapsed.milliseconds }.sorted()) ms; "
                + "/metrics + /health meanwhile: max \(metricsLatencies.last!.milliseconds) ms")
        let page = try httpGet(port: port, path: "/metrics").body
        #expect(Self.value("pgconn_exporter_probes_rejected_total", in: page) == 1, "a rare change: shown at once")
        // A gauge that changes often may lag by a page's age (ExpositionCache), a fraction of a second here.
        try eventually(timeout: .seconds(2), poll: .milliseconds(20)) {
            let page = try httpGet(port: port, path: "/metrics", timeout: .seconds(1)).body
            return Self.value("pgconn_exporter_probes_in_progress", in: page) == 0
        }
        // The four requests shared one connection to the silent host (plus its own session's).
        #expect(silent.acceptedCount == 2, "accepted \(silent.acceptedCount)")
    }

    @Test func aTargetBehindPgBouncerIsProbedWithWhatItsSessionLearnt() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let bouncer = try TestPgBouncer.start(in: server)
        defer { bouncer.cleanup() }
        let directory = try TemporaryDirectory()
        let config = try directory.write(
            "config.yml",
            """
            defaults: {probe_interval: 500ms, login_interval: 0s}
            targets:
              - name: pooled
                dsn: "\(bouncer.dsn())"
            """)
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)"], directory: directory)
        defer { exporter.kill() }
        // PgBouncer refuses the `options` startup parameter: the session connects again without it, once.
        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/health/pooled").status == 200 }
        for _ in 0..<3 {
            let answer = try httpGet(port: port, path: "/probe?target=pooled&debug=true")
            #expect(answer.body.contains("\nprobe_success 1\n"), "\(answer.body)")
            // The probe starts without the options the session found refused: one connect, not two.
            #expect(!answer.body.contains("refuses startup options"), "\(answer.body)")
            #expect(answer.body.components(separatedBy: "connecting to ").count == 2, "\(answer.body)")
        }
    }
}
