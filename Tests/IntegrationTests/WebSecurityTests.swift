import Foundation
import PGConnTestSupport
import Testing

/// `--web.config.file` on the real executable, checked with curl over loopback: HTTPS, mutual TLS, basic auth,
/// a certificate swapped on disk, a flood of bad passwords, and startup errors.
@Suite(.serialized) struct WebSecurityTests {
    /// bcrypt of "hunter2" at cost 10 (about 50 ms a check, as `htpasswd -nBC 10` makes them).
    static let hash = "$2y$10$29x8VH7g.6TQ9BpGZmJHxeAFeWkpoGqX5O/avrDrwp.iFByxuVrdu"
    static let config = """
        defaults:
          login_interval: 0s
        targets:
          - name: db
            dsn: host=127.0.0.1 port=1 user=postgres
        """

    /// A `tls_server_config` with the set's server certificate and key, and more keys under it.
    private func tls(_ pki: TestCertificates, _ more: String = "") -> String {
        "tls_server_config:\n  cert_file: \(pki.serverCertificate)\n  key_file: \(pki.serverKey)\n" + more
    }

    /// Starts the exporter with a web config and waits until it answers over HTTPS (any status).
    private func start(
        _ webConfig: String, in directory: TemporaryDirectory, ca: String, extra: [String] = [],
        clientOptions: [String] = []
    ) throws -> (ExporterProcess, String) {
        let config = try directory.write("config.yml", Self.config)
        let web = try directory.write("web.yml", webConfig)
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: [
                "--config.file=\(config)", "--web.config.file=\(web)", "--web.listen-address=127.0.0.1:\(port)",
            ] + extra,
            directory: directory)
        let base = "https://127.0.0.1:\(port)"
        try eventually(timeout: .seconds(20)) {
            try curl(base + "/-/healthy", ["--cacert", ca] + clientOptions).status != 0
        }
        return (exporter, base)
    }

    @Test func basicAuthOverHTTPS() throws {
        let directory = try TemporaryDirectory()
        let pki = try TestCertificates()
        defer { pki.remove() }
        let (exporter, base) = try start(
            tls(pki)
                + """
                http_server_config:
                  headers:
                    X-Content-Type-Options: nosniff
                basic_auth_users:
                  prom: \(Self.hash)
                """, in: directory, ca: pki.caCertificate, extra: ["--web.auth-exempt-path=/-/healthy"])
        defer { exporter.kill() }
        let ca = ["--cacert", pki.caCertificate]

        let missing = try curl(base + "/metrics", ca + ["-i"])
        #expect(missing.status == 401)
        #expect(missing.body.contains("WWW-Authenticate: Basic realm=\"pgconn_exporter\""), "\(missing.body)")
        #expect(missing.body.contains("X-Content-Type-Options: nosniff"))
        #expect(try curl(base + "/metrics", ca + ["-u", "prom:hunter3"]).status == 401)
        #expect(try curl(base + "/metrics", ca + ["-u", "eve:hunter2"]).status == 401)
        let right = try curl(base + "/metrics", ca + ["-u", "prom:hunter2"])
        #expect(right.status == 200)
        #expect(right.body.contains("pgconn_up{target=\"db\"} 0"))
        #expect(try curl(base + "/-/healthy", ca).status == 200, "exempt path")
        #expect(try curl(base + "/-/ready", ca).status == 401, "only the exempt path is open")
        // Plain HTTP on the HTTPS port gets no page.
        #expect(
            !(try curl(base.replacingOccurrences(of: "https:", with: "http:") + "/metrics").body.contains("pgconn_up")))
        let log = exporter.stderr()
        #expect(log.contains(#"msg="web config loaded""#) && log.contains("tls=true users=1"), "\(log)")
        #expect(!log.contains("hunter2"))
    }

    /// Twenty-four connections at a time send wrong passwords (each costs a bcrypt check; none is cached) while an
    /// authorised client scrapes on one keep-alive connection: its scrapes are answered from the credential
    /// cache on the HTTP threads, so they never queue behind the checks.
    @Test func aFloodOfBadPasswordsDoesNotSlowAnAuthorisedScraper() throws {
        let directory = try TemporaryDirectory()
        let pki = try TestCertificates()
        defer { pki.remove() }
        let (exporter, base) = try start(
            tls(pki) + "basic_auth_users:\n  prom: \(Self.hash)\n", in: directory, ca: pki.caCertificate)
        defer { exporter.kill() }
        let ca = ["--cacert", pki.caCertificate]
        #expect(try curl(base + "/metrics", ca + ["-u", "prom:hunter2"]).status == 200)

        let flood = Process()
        flood.executableURL = URL(fileURLWithPath: "/usr/bin/curl")
        flood.arguments =
            ["-s", "-w", "%{http_code}\n", "--parallel", "--parallel-max", "24", "-u", "prom:wrong"] + ca
            + Array(repeating: [base + "/metrics", "-o", "/dev/null"], count: 300).flatMap { $0 }
        let floodOutput = Pipe()
        flood.standardOutput = floodOutput
        try flood.run()
        defer { if flood.isRunning { flood.terminate() } }

        let scrapes = try run(
            "/usr/bin/curl",
            ["-s", "-w", "%{http_code} %{time_total}\n", "-u", "prom:hunter2"] + ca
                + Array(repeating: [base + "/metrics", "-o", "/dev/null"], count: 40).flatMap { $0 })
        let floodStillRunning = flood.isRunning
        flood.waitUntilExit()
        let floodCodes = String(decoding: floodOutput.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            .split(separator: "\n")
        let answers = scrapes.output.split(separator: "\n").map { $0.split(separator: " ") }
        let slowest = answers.compactMap { Double($0.last ?? "") }.max() ?? .infinity
        print("bcrypt flood: \(floodCodes.count) bad requests; authorised scrapes: slowest \(slowest * 1000) ms")
        #expect(floodStillRunning, "the scrapes ran while the flood did")
        #expect(answers.count == 40 && answers.allSatisfy { $0.first == "200" }, "\(scrapes.output)")
        #expect(Set(floodCodes).isSubset(of: ["401", "429"]), "\(Set(floodCodes))")
        #expect(floodCodes.contains("429"), "the checks' queue filled up")
        // Queued behind the checks, a scrape would wait 16 checks of ~50 ms each.
        #expect(slowest < 0.4)
    }

    @Test func mutualTLSRefusesClientsWithoutACertificateFromTheClientCA() throws {
        let directory = try TemporaryDirectory()
        let pki = try TestCertificates()
        let stranger = try TestCertificates(name: "stranger CA")
        defer {
            pki.remove()
            stranger.remove()
        }
        let (exporter, base) = try start(
            tls(pki, "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: \(pki.caCertificate)\n"),
            in: directory, ca: pki.caCertificate,
            clientOptions: ["--cert", pki.clientCertificate, "--key", pki.clientKey])
        defer { exporter.kill() }
        let ca = ["--cacert", pki.caCertificate]
        #expect(try curl(base + "/metrics", ca).status == 0)
        #expect(
            try curl(base + "/metrics", ca + ["--cert", stranger.clientCertificate, "--key", stranger.clientKey]).status
                == 0)
        let signed = try curl(base + "/metrics", ca + ["--cert", pki.clientCertificate, "--key", pki.clientKey])
        #expect(signed.status == 200)
        #expect(signed.body.contains("pgconn_up"))
    }

    /// A certificate and key replaced on disk are served without a restart: picked up by the file watch, and at
    /// once on SIGHUP. Switching to plain HTTP is refused on reload, and HTTPS goes on.
    @Test func aCertificateSwappedOnDiskTakesEffect() throws {
        let directory = try TemporaryDirectory()
        let first = try TestCertificates(name: "first CA")
        let second = try TestCertificates(name: "second CA")
        defer {
            first.remove()
            second.remove()
        }
        let certificate = directory.url.appendingPathComponent("server.crt").path
        let key = directory.url.appendingPathComponent("server.key").path
        func install(_ pki: TestCertificates) throws {
            try Data(pki.bytes(pki.serverKey)).write(to: URL(fileURLWithPath: key))
            try Data(pki.bytes(pki.serverCertificate)).write(to: URL(fileURLWithPath: certificate))
        }
        try install(first)
        let (exporter, base) = try start(
            "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n", in: directory,
            ca: first.caCertificate)
        defer { exporter.kill() }
        #expect(try curl(base + "/-/healthy", ["--cacert", first.caCertificate]).status == 200)

        try install(second)
        try eventually(timeout: .seconds(20), poll: .milliseconds(200)) {
            try curl(base + "/-/healthy", ["--cacert", second.caCertificate]).status == 200
        }
        #expect(try curl(base + "/-/healthy", ["--cacert", first.caCertificate]).status == 0)
        #expect(exporter.stderr().contains(#"msg="web config reloaded" certificate_not_after="#))

        try install(first)
        kill(exporter.pid, SIGHUP)
        try eventually(timeout: .seconds(5), poll: .milliseconds(20)) {
            try curl(base + "/-/healthy", ["--cacert", first.caCertificate]).status == 200
        }
        #expect(exporter.stderr().contains("trigger=SIGHUP"))

        _ = try directory.write("web.yml", "basic_auth_users: {}\n")
        kill(exporter.pid, SIGHUP)
        try eventually(timeout: .seconds(5)) {
            exporter.stderr().contains("switching between HTTP and HTTPS needs a restart")
        }
        #expect(try curl(base + "/-/healthy", ["--cacert", first.caCertificate]).status == 200)
    }

    @Test func aBadWebConfigIsAClearErrorAtStartupAndInConfigCheck() throws {
        let directory = try TemporaryDirectory()
        let config = try directory.write("config.yml", Self.config)
        let cases: [(String, String)] = [
            (
                "basic_auth_users:\n  bob: hunter2\n",
                "basic_auth_users.bob: expected a bcrypt hash ($2y$, $2b$ or $2a$, 60 characters, "
                    + "e.g. from htpasswd -nBC 10 \"\"), got a string"
            ),
            (
                "tls_server_config:\n  cert_file: missing.crt\n  key_file: missing.key\n",
                "tls_server_config.cert_file: cannot read \"\(directory.url.path)/missing.crt\": no such file or directory"
            ),
            ("tls_server_config:\n  cert_file: a.crt\n", "tls_server_config: cert_file given without key_file"),
        ]
        for (yaml, message) in cases {
            let web = try directory.write("web.yml", yaml)
            for arguments in [["--config.check"], ["--web.listen-address=127.0.0.1:0"]] {
                let result = try runCommand(
                    try ExporterBinary.url().path, arguments + ["--config.file=\(config)", "--web.config.file=\(web)"],
                    timeout: .seconds(10))
                #expect(result.status == 1, "\(arguments) \(yaml)")
                #expect(result.stderr.hasPrefix("pgconn_exporter: error: \(web): \(message)"), "\(result.stderr)")
                #expect(!result.stderr.contains("hunter2"))
            }
        }
        let pki = try TestCertificates()
        defer { pki.remove() }
        let web = try directory.write(
            "web.yml", "tls_server_config:\n  cert_file: \(pki.serverCertificate)\n  key_file: \(pki.clientKey)\n")
        let mismatch = try runCommand(
            try ExporterBinary.url().path, ["--config.check", "--config.file=\(config)", "--web.config.file=\(web)"])
        #expect(mismatch.status == 1)
        #expect(mismatch.stderr.hasPrefix("pgconn_exporter: error: \(web): tls_server_config: certificate and key: "))
        let good = try directory.write(
            "web.yml", "tls_server_config:\n  cert_file: \(pki.serverCertificate)\n  key_file: \(pki.serverKey)\n")
        let check = try runCommand(
            try ExporterBinary.url().path, ["--config.check", "--config.file=\(config)", "--web.config.file=\(good)"])
        #expect(check.status == 0)
        #expect(check.stdout.hasSuffix("\(good): valid, HTTPS, 0 basic auth user(s), 0 header(s)\n"))
    }
}
