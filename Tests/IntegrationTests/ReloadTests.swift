import Foundation
import Glibc
import Testing

/// Hot reload with the real binary: `POST /-/reload` and SIGHUP, against a real PostgreSQL, counted on the
/// server (the session's backend pid) and in `/metrics`.
@Suite struct ReloadTests {
    func config(_ server: TestPostgres, _ targets: [(name: String, database: String, extra: String)]) -> String {
        let list = targets.map { target in
            """
              - name: \(target.name)
                dsn: "\(server.dsn(password: TestPostgres.superuserPassword, database: target.database))"
            \(target.extra)
            """
        }
        return """
            defaults:
              probe_interval: 200ms
              login_interval: 0s
              backoff: {initial: 50ms, max: 200ms}
            targets:
            \(list.joined(separator: "\n"))
            """
    }

    @Test func autoReloadFollowsTheFileAndReportsABadEditOnce() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let directory = try TemporaryDirectory()
        let file = try directory.write("config.yml", config(server, [("a", "postgres", "")]))
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: [
                "--config.file=\(file)", "--web.listen-address=127.0.0.1:\(port)", "--config.auto-reload-interval=100ms",
            ], directory: directory)
        defer { exporter.kill() }
        func metrics() throws -> String { try httpGet(port: port, path: "/metrics").body }
        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/health").status == 200 }

        _ = try directory.write("config.yml", config(server, [("a", "postgres", ""), ("b", "template1", "")]))
        try eventually(timeout: .seconds(10)) { try metrics().contains(#"pgconn_up{target="b"} 1"#) }

        _ = try directory.write("config.yml", "targets: [{name: a}]\n")
        try eventually(timeout: .seconds(10)) { try metrics().contains("pgconn_exporter_config_last_reload_successful 0") }
        // Several more ticks pass over the same bad content: it is reported once.
        let ticks = ContinuousClock.now + .milliseconds(500)
        while ContinuousClock.now < ticks { _ = try metrics() }
        let failures = exporter.stderr().split(separator: "\n").filter { $0.contains("configuration reload failed") }
        #expect(failures.count == 1, "\(failures)")
        #expect(failures.first?.contains("trigger=auto") == true)
        #expect(try metrics().contains(#"pgconn_up{target="b"} 1"#), "the old config stays")
        #expect(try ExporterProcessTests.value(metrics(), "pgconn_exporter_config_last_reload_successful") == 0)
    }

    @Test func aBadAutoReloadIntervalIsAFlagError() throws {
        let directory = try TemporaryDirectory()
        let exporter = try ExporterProcess(arguments: ["--config.auto-reload-interval=10ms"], directory: directory)
        defer { exporter.kill() }
        #expect(try exporter.waitForExit(timeout: .seconds(10)) == 64)
        #expect(exporter.stderr().contains("--config.auto-reload-interval: must be 0s (off) or a duration of at least 100ms"))
    }

    /// The exporter on `file`, listening on a free port.
    func launch(_ file: String, in directory: TemporaryDirectory) throws -> (ExporterProcess, Int) {
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(file)", "--web.listen-address=127.0.0.1:\(port)"], directory: directory)
        return (exporter, port)
    }

    func sessionPID(_ server: TestPostgres, database: String) throws -> String {
        try server.psql(
            "SELECT coalesce(string_agg(pid::text, ','), '') FROM pg_stat_activity "
                + "WHERE application_name = 'pgconn_exporter' AND datname = '\(database)'")
    }

    /// `metrics:` changes only the page: the session stays, and the history recorded meanwhile shows at once.
    @Test func lessDetailAndMoreDetailTakeEffectOnReloadAndKeepTheSession() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let directory = try TemporaryDirectory()
        let lean = "metrics: {histograms: off, reasons: seen}\n" + config(server, [("a", "postgres", "")])
        let file = try directory.write("config.yml", lean)
        let (exporter, port) = try launch(file, in: directory)
        defer { exporter.kill() }
        func metrics() throws -> String { try httpGet(port: port, path: "/metrics").body }
        try eventually(timeout: .seconds(20)) {
            try ExporterProcessTests.value(metrics(), #"pgconn_probes_total{target="a"}"#) ?? 0 >= 3
        }
        let pid = try sessionPID(server, database: "postgres")
        var page = try metrics()
        #expect(!page.contains("pgconn_probe_duration_seconds"))
        #expect(!page.contains("pgconn_connect_duration_seconds"))
        #expect(!page.contains("reason="), "no failure happened, so no reason counter")
        #expect(page.contains("pgconn_exporter_loop_lag_seconds_bucket"), "the exporter's own histogram stays")

        _ = try directory.write("config.yml", config(server, [("a", "postgres", "")]))
        #expect(try httpRequest(method: "POST", port: port, path: "/-/reload").status == 200)
        page = try metrics()
        #expect(page.contains(#"pgconn_probe_failures_total{target="a",reason="timeout"} 0"#))
        let count = try #require(ExporterProcessTests.value(page, #"pgconn_probe_duration_seconds_count{target="a"}"#))
        #expect(count >= 3, "the probes run while histograms were off are in the histogram")

        _ = try directory.write("config.yml", "metrics: {histograms: coarse}\n" + config(server, [("a", "postgres", "")]))
        #expect(try httpRequest(method: "POST", port: port, path: "/-/reload").status == 200)
        page = try metrics()
        let buckets = page.split(separator: "\n").filter { $0.hasPrefix("pgconn_probe_duration_seconds_bucket") }
        #expect(buckets.count == 5)
        #expect(try sessionPID(server, database: "postgres") == pid, "the session was never touched")
    }

    @Test func unchangedSessionsSurviveARemovedOneClosesANewOneStartsAndABadFileChangesNothing() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        try server.psql("CREATE DATABASE other")
        let directory = try TemporaryDirectory()
        let file = try directory.write(
            "config.yml",
            config(server, [("a", "postgres", "    labels: {v: \"1\"}"), ("b", "template1", "")]))
        let (exporter, port) = try launch(file, in: directory)
        defer { exporter.kill() }
        func metrics() throws -> String { try httpGet(port: port, path: "/metrics").body }
        try eventually(timeout: .seconds(20)) {
            try httpGet(port: port, path: "/health").status == 200
        }
        let pidA = try sessionPID(server, database: "postgres")
        #expect(!pidA.isEmpty && !pidA.contains(","))

        // a: only its label and query change; b: removed; c: new.
        _ = try directory.write(
            "config.yml",
            config(server, [("a", "postgres", "    labels: {v: \"2\"}\n    query: SELECT 2"), ("c", "other", "")]))
        let clock = ContinuousClock()
        let start = clock.now
        let reloaded = try httpRequest(method: "POST", port: port, path: "/-/reload")
        print("reload of 2 targets: \((clock.now - start).milliseconds) ms")
        #expect(reloaded.status == 200)
        #expect(reloaded.text == "Reloaded: 1 added, 1 removed, 1 reconfigured, 0 reconnected, 0 unchanged\n")
        try eventually(timeout: .seconds(10)) { try httpGet(port: port, path: "/health/c").status == 200 }
        try eventually(timeout: .seconds(10)) { try sessionPID(server, database: "template1").isEmpty }
        #expect(try sessionPID(server, database: "postgres") == pidA, "a kept its session: the same backend")
        var page = try metrics()
        #expect(page.contains(#"pgconn_connection_attempts_total{target="a"} 1"#), "a kept its counters")
        #expect(page.contains(#",v="2"} 1"#), "a took its new label")
        #expect(!page.contains(#"{target="b""#), "b's series are gone")
        #expect(page.contains(#"pgconn_up{target="c"} 1"#))
        #expect(page.contains("pgconn_exporter_config_last_reload_successful 1"))

        // A broken file: 500 with the errors, the old config stays.
        _ = try directory.write("config.yml", "defaults:\n  probe_interval: soon\ntargets: []\n")
        let failed = try httpRequest(method: "POST", port: port, path: "/-/reload")
        #expect(failed.status == 500)
        #expect(failed.text.contains("config.yml: defaults.probe_interval:"), "\(failed.text)")
        page = try metrics()
        #expect(page.contains("pgconn_exporter_config_last_reload_successful 0"))
        #expect(page.contains(#"pgconn_up{target="a"} 1"#) && page.contains(#"pgconn_up{target="c"} 1"#))
        #expect(try httpRequest(method: "GET", port: port, path: "/-/reload").status == 405)

        // SIGHUP with a's connection changed: it reconnects (a new backend) and keeps its counters.
        _ = try directory.write(
            "config.yml",
            config(server, [("a", "postgres", "    labels: {v: \"2\"}\n    keepalives: {idle: 20s}"), ("c", "other", "")]))
        kill(exporter.pid, SIGHUP)
        try eventually(timeout: .seconds(10)) {
            try metrics().contains("pgconn_exporter_config_last_reload_successful 1")
        }
        try eventually(timeout: .seconds(10)) {
            let pid = try sessionPID(server, database: "postgres")
            return !pid.isEmpty && pid != pidA
        }
        try eventually(timeout: .seconds(10)) {
            try metrics().contains(#"pgconn_connection_attempts_total{target="a"} 2"#)
        }
        let line = exporter.stderr().split(separator: "\n").last { $0.contains(#"msg="configuration reloaded""#) }
        #expect(line?.contains("trigger=SIGHUP") == true && line?.contains("reconnected=1") == true, "\(line ?? "")")
    }
}
