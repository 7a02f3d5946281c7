import Foundation
import Testing

/// The real `pgconn_exporter` executable as a user runs it: flags, config errors, HTTP, logs, signals.
@Suite(.serialized) struct ExporterProcessTests {
    // MARK: Config errors

    static let validConfig = """
        targets:
          - name: db
            dsn: host=127.0.0.1 port=1 user=postgres
        """

    static let invalidConfigs: [(String, String, [String])] = [
        (
            "timeout longer than the interval",
            """
            targets:
              - name: db
                dsn: host=127.0.0.1 user=postgres
                probe_interval: 1s
                probe_timeout: 2s
            """,
            ["targets[0].probe_timeout: must not be longer than probe_interval (2s > 1s)"]
        ),
        (
            "COPY in the probe query",
            """
            targets:
              - name: db
                dsn: host=127.0.0.1 user=postgres
                query: COPY (SELECT 1) TO STDOUT
            """,
            [
                "targets[0].query: COPY is not allowed in a probe query (statement 1 of 1 starts with COPY, "
                    + "which streams data instead of returning a result)"
            ]
        ),
        (
            "unknown key and duplicate name",
            """
            targets:
              - name: db
                dsn: host=127.0.0.1 user=postgres
                prob_interval: 5s
              - name: db
                dsn: host=127.0.0.2 user=postgres
            """,
            [
                "targets[0].prob_interval: unknown key",
                #"targets[1].name: duplicate target name "db" (first at targets[0])"#,
            ]
        ),
        (
            "bad duration and empty dsn",
            """
            defaults:
              probe_interval: 5x
            targets:
              - name: db
                dsn: ""
            """,
            [
                #"defaults.probe_interval: invalid duration "5x": unknown unit "x" (use ms, s, m, h, d, w, y)"#,
                "targets[0].dsn: must not be empty",
            ]
        ),
        (
            "negative duration",
            """
            targets:
              - name: db
                dsn: host=127.0.0.1 user=postgres
                connect_timeout: -5s
            """,
            [#"targets[0].connect_timeout: invalid duration "-5s": must not be negative"#]
        ),
    ]

    @Test func configCheckAcceptsAValidConfig() throws {
        let directory = try TemporaryDirectory()
        let file = try directory.write("valid.yml", Self.validConfig)
        let result = try runCommand(try ExporterBinary.url().path, ["--config.check", "--config.file=\(file)"])
        #expect(result.status == 0, "stderr: \(result.stderr)")
        #expect(result.stdout == "\(file): valid, 1 target(s): db\n")
    }

    @Test(arguments: invalidConfigs)
    func badConfigExitsNonZeroNamingThePath(name: String, yaml: String, messages: [String]) throws {
        let directory = try TemporaryDirectory()
        let file = try directory.write("config.yml", yaml)
        for arguments in [["--config.check"], ["--web.listen-address=127.0.0.1:0"]] {
            let result = try runCommand(
                try ExporterBinary.url().path, arguments + ["--config.file=\(file)"], timeout: .seconds(10))
            #expect(result.status == 1, "\(name) with \(arguments)")
            let expected = messages.map { "pgconn_exporter: error: \(file): \($0)\n" }.joined()
            #expect(result.stderr == expected, "\(name)")
        }
    }

    @Test func missingConfigFileAndBadFlagsAreClearErrors() throws {
        let binary = try ExporterBinary.url().path
        let missing = try runCommand(binary, ["--config.file=/nonexistent/pgconn.yml"])
        #expect(missing.status == 1)
        #expect(
            missing.stderr
                == "pgconn_exporter: error: /nonexistent/pgconn.yml: "
                + #"cannot read config file "/nonexistent/pgconn.yml": no such file or directory"# + "\n")
        let directory = try runCommand(binary, ["--config.check", "--config.file=/"])
        #expect(directory.status == 1)
        #expect(directory.stderr == #"pgconn_exporter: error: /: cannot read config file "/": is a directory"# + "\n")

        let level = try runCommand(binary, ["--log.level=verbose"])
        #expect(level.status != 0)
        #expect(level.stderr.contains(#"--log.level: must be one of debug, info, warn, error (got "verbose")"#))
        let format = try runCommand(binary, ["--log.format=xml"])
        #expect(format.status != 0)
        #expect(format.stderr.contains(#"--log.format: must be logfmt or json (got "xml")"#))

        let version = try runCommand(binary, ["--version"])
        #expect(version.status == 0)
        #expect(version.stdout == "0.1.0\n")
    }

    /// The `process_*` families, read from /proc by the executable; no database needed.
    @Test func processMetricsDescribeTheExporterProcess() throws {
        let directory = try TemporaryDirectory()
        let config = try directory.write("valid.yml", Self.validConfig)
        let port = TestPostgres.freePort()
        let started = Date().timeIntervalSince1970
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)"], directory: directory)
        defer { exporter.kill() }
        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/-/healthy").status == 200 }
        let body = try httpGet(port: port, path: "/metrics").body
        func value(_ name: String) -> Double? {
            let line = body.split(separator: "\n").first { $0.hasPrefix("\(name) ") }
            return line.flatMap { Double($0.split(separator: " ")[1]) }
        }
        let resident = try #require(value("process_resident_memory_bytes"))
        #expect(resident > 0)
        #expect(try #require(value("process_virtual_memory_bytes")) >= resident)
        #expect(try #require(value("process_cpu_seconds_total")) >= 0)
        let openFDs = try #require(value("process_open_fds"))
        #expect(openFDs > 0)
        #expect(try #require(value("process_max_fds")) >= openFDs)
        // btime is whole seconds, so allow a second of rounding either way.
        let start = try #require(value("process_start_time_seconds"))
        #expect(start >= started - 1 && start <= Date().timeIntervalSince1970 + 1)
    }

    @Test func portInUseIsAClearError() throws {
        let directory = try TemporaryDirectory()
        let file = try directory.write("valid.yml", Self.validConfig)
        let (fd, port) = try SocketIO.listen()
        defer { close(fd) }
        let result = try runCommand(
            try ExporterBinary.url().path, ["--config.file=\(file)", "--web.listen-address=127.0.0.1:\(port)"],
            timeout: .seconds(10))
        #expect(result.status == 1)
        #expect(result.stderr.hasPrefix("pgconn_exporter: error: --web.listen-address: "), "\(result.stderr)")
        #expect(result.stderr.contains("127.0.0.1:\(port)"))
    }

    // MARK: Serving a live target

    @Test func servesALiveTargetLogsStateChangesAndStopsOnSigterm() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        try server.psql("CREATE ROLE monitor LOGIN PASSWORD 'hunter2-secret'")
        let directory = try TemporaryDirectory()
        let passwordFile = try directory.write("password", "hunter2-secret\n")
        let config = try directory.write(
            "config.yml",
            """
            defaults:
              probe_interval: 500ms
              probe_timeout: 400ms
              login_interval: 1s
            targets:
              - name: db
                dsn: postgresql://monitor@127.0.0.1:\(server.port)/postgres?sslmode=disable
                password_file: \(passwordFile)
                expect: primary
                labels: {cluster: main}
            """)
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)"], directory: directory)
        defer { exporter.kill() }

        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/-/ready").status == 200 }
        // The first login check starts within min(login_interval, 10s) = 1s of the start.
        try eventually(timeout: .seconds(20)) {
            try httpGet(port: port, path: "/metrics").body.contains(#"pgconn_login_up{target="db"}"#)
        }
        let metrics = try httpGet(port: port, path: "/metrics")
        #expect(metrics.status == 200)
        #expect(metrics.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8")
        for line in [
            #"pgconn_up{target="db"} 1"#, #"pgconn_login_up{target="db"} 1"#,
            #"pgconn_state{target="db",state="up"} 1"#,
            #"pgconn_server_in_recovery{target="db"} 0"#,
            #"pgconn_target_info{target="db",host="127.0.0.1",port="\#(server.port)",database="postgres",user="monitor",sslmode="disable",cluster="main"} 1"#,
            #"pgconn_exporter_config_last_reload_successful 1"#,
        ] {
            #expect(metrics.body.contains(line + "\n"), "missing \(line)")
        }
        #expect(metrics.body.contains("pgconn_exporter_build_info{version=\"0.1.0\""))
        #expect(metrics.body.contains("process_resident_memory_bytes "))
        #expect(!metrics.body.contains("hunter2"), "no password in metrics")
        try expectPromtoolAccepts(metrics.body)

        // What Prometheus asks for: gzip, which must decode to the same kind of page.
        let gzipped = try httpRequest(port: port, path: "/metrics", headers: ["Accept-Encoding": "gzip"])
        #expect(gzipped.headers["content-encoding"] == "gzip")
        let gzipFile = directory.url.appendingPathComponent("metrics.gz")
        try gzipped.body.write(to: gzipFile)
        let unzipped = try runCommand("/bin/gzip", ["-dc", gzipFile.path])
        #expect(unzipped.status == 0, "\(unzipped.stderr)")
        #expect(unzipped.stdout.contains(#"pgconn_up{target="db"} 1"#))
        print("/metrics: \(metrics.body.utf8.count) bytes, gzip \(gzipped.body.count) bytes")

        let landing = try httpGet(port: port, path: "/")
        #expect(landing.status == 200)
        #expect(landing.body.contains("db"))
        #expect(try httpGet(port: port, path: "/nope").status == 404)
        let post = try httpRequest(method: "POST", port: port, path: "/metrics")
        #expect(post.status == 405)

        let clock = ContinuousClock()
        let start = clock.now
        exporter.terminate()
        let status = try exporter.waitForExit(timeout: .seconds(5))
        let shutdown = clock.now - start
        print("SIGTERM to exit: \(shutdown.milliseconds) ms")
        #expect(status == 0)
        // About 10 ms normally; the bound catches a shutdown that waits for something (a join, a drain) and
        // leaves room for a sanitizer build, which is several times slower.
        #expect(shutdown < .seconds(3))

        let log = exporter.stderr()
        #expect(log.contains(#"msg="session state changed" target=db from=start to=connecting"#), "\(log)")
        #expect(log.contains(#"msg="session state changed" target=db from=connecting to=up"#))
        #expect(!log.contains("hunter2"), "no password in logs")
        #expect(log.hasSuffix("level=info msg=stopped\n"), "the writer flushes the last line on exit")
        let leftOver = try server.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'pgconn_exporter%'")
        #expect(leftOver == "0", "every connection closed on exit")
    }

    // MARK: A broken or stuck stderr

    /// stderr on a pipe whose read end the test closed: every log write fails with EPIPE. The exporter used to die
    /// of SIGILL (`FileHandle.write` traps); now the lines are counted as dropped and it keeps serving.
    @Test func aBrokenStderrNeitherKillsNorStopsIt() throws {
        let directory = try TemporaryDirectory()
        let config = try directory.write(
            "config.yml",
            """
            defaults:
              login_interval: 0s
              backoff: {initial: 20ms, max: 50ms, jitter: 0}
            targets:
              - name: nothing
                dsn: host=127.0.0.1 port=\(TestPostgres.freePort()) user=postgres
            """)
        let port = TestPostgres.freePort()
        let pipe = Pipe()
        let clock = ContinuousClock()
        let start = clock.now
        let exporter = try ExporterProcess(
            // Debug level: every failed attempt logs (at info a repeated failure logs once every five minutes).
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)", "--log.level=debug"],
            directory: directory, standardError: pipe)
        defer { exporter.kill() }
        try pipe.fileHandleForReading.close()
        try? pipe.fileHandleForWriting.close()

        // The target's state changes log a line every few tens of milliseconds, each one failing with EPIPE.
        var dropped = 0.0
        try eventually(timeout: .seconds(20)) {
            guard exporter.isRunning else { return true }
            let page = try httpGet(port: port, path: "/metrics").body
            dropped = Self.value(page, "pgconn_exporter_log_lines_dropped_total") ?? 0
            return dropped >= 20
        }
        let elapsed = clock.now - start
        try #require(exporter.isRunning, "died after \(elapsed) with \(exporter.termination)")
        print("broken stderr: \(Int(dropped)) lines dropped after \(Int(elapsed.milliseconds)) ms, still running")
        let page = try httpGet(port: port, path: "/metrics")
        #expect(page.status == 200)
        #expect(page.body.contains(#"pgconn_up{target="nothing"} 0"#))
        #expect((Self.value(page.body, "pgconn_exporter_log_lines_dropped_total") ?? 0) >= dropped)

        exporter.terminate()
        let status = try exporter.waitForExit(timeout: .seconds(5))
        #expect(exporter.termination == "exit 0", "SIGTERM ends it normally, not by a signal: \(exporter.termination)")
        #expect(status == 0)
    }

    /// Errors printed before the monitor starts (a bad flag, a missing config) on a broken stderr: the exit status
    /// stays the error's, not SIGPIPE (the old binary died of signal 13 here).
    @Test func errorsOnABrokenStderrStillExitWithTheirStatus() throws {
        let directory = try TemporaryDirectory()
        let cases = [(["--config.file=/nonexistent/pgconn.yml"], "exit 1"), (["--log.level=x"], "exit 64")]
        for (arguments, expected) in cases {
            let pipe = Pipe()
            let exporter = try ExporterProcess(arguments: arguments, directory: directory, standardError: pipe)
            defer { exporter.kill() }
            try pipe.fileHandleForReading.close()  // Long before the child gets to write its error.
            try? pipe.fileHandleForWriting.close()
            _ = try exporter.waitForExit(timeout: .seconds(10))
            #expect(exporter.termination == expected, "\(arguments)")
        }
    }

    /// stderr on a pipe that nobody reads: once the pipe is full, log writes would block. Failing targets log many
    /// state changes; the healthy target must keep being probed (its `pgconn_up` stays 1) while lines are dropped.
    @Test func anUnreadStderrDropsLinesButProbesGoOn() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let directory = try TemporaryDirectory()
        let closedPort = TestPostgres.freePort()
        let failing = (0..<20).map { index in
            """
              - name: refused\(index)
                dsn: host=127.0.0.1 port=\(closedPort) user=postgres
            """
        }
        let config = try directory.write(
            "config.yml",
            """
            defaults:
              probe_interval: 200ms
              probe_timeout: 150ms
              login_interval: 0s
              backoff: {initial: 10ms, max: 20ms, jitter: 0}
            targets:
              - name: healthy
                dsn: "\(server.dsn(password: TestPostgres.superuserPassword))"
            \(failing.joined(separator: "\n"))
            """)
        let port = TestPostgres.freePort()
        let pipe = Pipe()  // The read end stays open and unread until the end of the test.
        let exporter = try ExporterProcess(
            // Debug level: every failed attempt logs (at info a repeated failure logs once every five minutes).
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)", "--log.level=debug"],
            directory: directory, standardError: pipe)
        defer {
            exporter.kill()
            try? pipe.fileHandleForReading.close()
        }
        try? pipe.fileHandleForWriting.close()
        func page() throws -> String { try httpGet(port: port, path: "/metrics").body }
        let healthyUp = #"pgconn_up{target="healthy"} 1"#
        let probes = #"pgconn_probes_total{target="healthy"}"#

        // The pipe (64 KiB) and then the queue (4,096 lines) fill up: lines get dropped.
        let clock = ContinuousClock()
        let start = clock.now
        var dropped = 0.0
        try eventually(timeout: .seconds(60)) {
            dropped = Self.value(try page(), "pgconn_exporter_log_lines_dropped_total") ?? 0
            return dropped > 0
        }
        print("unread stderr: first dropped lines after \(Int((clock.now - start).milliseconds)) ms")

        // With logging stuck, the healthy target must still be probed every 200 ms: 10 more probes, up throughout.
        let first = try page()
        #expect(first.contains(healthyUp + "\n"), "healthy target down while stderr is stuck")
        let before = try #require(Self.value(first, probes))
        var after = before
        var downSeen = 0
        try eventually(timeout: .seconds(20)) {
            let text = try page()
            if !text.contains(healthyUp + "\n") { downSeen += 1 }
            after = Self.value(text, probes) ?? before
            return after >= before + 10
        }
        #expect(downSeen == 0, "pgconn_up of the healthy target went 0 in \(downSeen) scrape(s)")
        let last = try page()
        let droppedLater = Self.value(last, "pgconn_exporter_log_lines_dropped_total") ?? 0
        #expect(droppedLater > dropped, "lines keep being dropped, not queued without bound")
        print("unread stderr: probes \(Int(before)) -> \(Int(after)), \(Int(droppedLater)) lines dropped")

        let stop = clock.now
        exporter.terminate()
        let status = try exporter.waitForExit(timeout: .seconds(5))
        print("unread stderr: SIGTERM to exit \(Int((clock.now - stop).milliseconds)) ms (the log flush waits ≤ 1 s)")
        #expect(exporter.termination == "exit 0", "\(exporter.termination)")
        #expect(status == 0)
    }

    /// The value of the sample `series` (name and labels, exactly as rendered) in a /metrics page.
    static func value(_ page: String, _ series: String) -> Double? {
        page.split(separator: "\n").lazy.compactMap { line -> Double? in
            guard line.hasPrefix(series + " ") else { return nil }
            return Double(line.dropFirst(series.count + 1))
        }.first
    }

    private func expectPromtoolAccepts(_ text: String) throws {
        let promtool = "/usr/bin/promtool"
        guard FileManager.default.isExecutableFile(atPath: promtool) else {
            Issue.record("promtool missing: `make deps` installs the prometheus package")
            return
        }
        let result = try runCommand(promtool, ["check", "metrics"], stdin: text)
        #expect(
            result.status == 0 && result.stdout.isEmpty && result.stderr.isEmpty,
            "promtool: \(result.stdout)\(result.stderr)")
    }
}

/// A temporary directory removed when the value goes.
final class TemporaryDirectory {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("pgconn-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    /// Writes `contents` to `name` inside the directory and returns its path.
    func write(_ name: String, _ contents: String) throws -> String {
        let file = url.appendingPathComponent(name)
        try contents.write(to: file, atomically: true, encoding: .utf8)
        return file.path
    }
}

extension ExporterProcess {
    /// Writes `yaml` as the directory's `config.yml` and starts the exporter with it on a free loopback port.
    static func start(
        config yaml: String, in directory: TemporaryDirectory, arguments: [String] = [],
        environment: [String: String] = [:], launcher: [String] = []
    ) throws -> (exporter: ExporterProcess, port: Int) {
        let config = try directory.write("config.yml", yaml)
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)"] + arguments,
            directory: directory, launcher: launcher, environment: environment)
        return (exporter, port)
    }
}

/// The exporter running as a child process, its stderr captured to a file (or sent to a pipe the test holds).
final class ExporterProcess {
    private let process = Process()
    private let stderrURL: URL

    /// - Parameters:
    ///   - launcher: a command that `exec`s its arguments (the exporter and `arguments`) in the end, such as
    ///     `unshare -m sh -c '...; exec "$@"' sh`; the exporter keeps the launcher's PID.
    ///   - environment: extra variables for the exporter.
    init(
        arguments: [String], directory: TemporaryDirectory, standardError pipe: Pipe? = nil, launcher: [String] = [],
        environment: [String: String] = [:]
    ) throws {
        stderrURL = directory.url.appendingPathComponent("exporter.stderr")
        _ = FileManager.default.createFile(atPath: stderrURL.path, contents: nil)
        let binary = try ExporterBinary.url()
        if let first = launcher.first {
            process.executableURL = URL(fileURLWithPath: first)
            process.arguments = Array(launcher.dropFirst()) + [binary.path] + arguments
        } else {
            process.executableURL = binary
            process.arguments = arguments
        }
        if !environment.isEmpty {
            process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
        }
        process.standardError = try pipe ?? FileHandle(forWritingTo: stderrURL)
        process.standardOutput = FileHandle.nullDevice
        try process.run()
    }

    var isRunning: Bool { process.isRunning }
    var pid: pid_t { process.processIdentifier }

    /// How the process ended, for messages: "exit 0" or "signal 4". Only meaningful once it is not running.
    var termination: String {
        "\(process.terminationReason == .exit ? "exit" : "signal") \(process.terminationStatus)"
    }

    func terminate() { process.terminate() }

    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }

    /// Waits for the exit status, polling so a hung process fails the test instead of hanging it.
    func waitForExit(timeout: Duration) throws -> Int32 {
        try eventually(timeout: timeout, poll: .milliseconds(10)) { !process.isRunning }
        return process.terminationStatus
    }

    func stderr() -> String { (try? String(contentsOf: stderrURL, encoding: .utf8)) ?? "" }
}
