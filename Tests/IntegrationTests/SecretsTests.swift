import Foundation
import Testing

/// Passwords on the real executable: rotated under a live exporter without a restart, and never shown
/// anywhere, however they were given.
@Suite(.serialized) struct SecretsTests {
    /// Fast probes and a login check every second, as every test here wants.
    static let defaults = """
        defaults:
          probe_interval: 300ms
          probe_timeout: 250ms
          login_interval: 1s

        """

    /// Writes `defaults` + `yaml` as the config and starts the exporter on a free port.
    private func start(
        _ yaml: String, in directory: TemporaryDirectory, arguments: [String] = [], environment: [String: String] = [:]
    ) throws -> (ExporterProcess, Int) {
        try ExporterProcess.start(
            config: Self.defaults + yaml, in: directory, arguments: arguments, environment: environment)
    }
    /// The role's password and its file change together; the next login check and the next session (after the
    /// server ends the old one) log in with the new one, with no reload and no restart.
    @Test func aRotatedPasswordIsPickedUpByTheNextLoginAndTheNextSession() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        try server.psql("CREATE ROLE rotating LOGIN PASSWORD 'old-password-1'")
        let directory = try TemporaryDirectory()
        let passwordFile = try directory.write("password", "old-password-1\n")
        let (exporter, port) = try start(
            """
            targets:
              - name: db
                dsn: postgresql://rotating@127.0.0.1:\(server.port)/postgres?sslmode=disable
                password_file: \(passwordFile)
            """, in: directory)
        defer { exporter.kill() }
        func value(_ series: String) throws -> Double? {
            let page = try httpGet(port: port, path: "/metrics").body
            let line = page.split(separator: "\n").first { $0.hasPrefix(series + " ") }
            return line.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        let checks = #"pgconn_login_checks_total{target="db"}"#
        try eventually(timeout: .seconds(20)) { try value(#"pgconn_login_up{target="db"}"#) == 1 }

        // The file first, then the role: a check in between would send the new password to the old role.
        try directory.write("password", "new-password-2\n").discard()
        try server.psql("ALTER ROLE rotating PASSWORD 'new-password-2'")
        let before = try value(checks) ?? 0
        try eventually(timeout: .seconds(20)) { try value(checks) ?? 0 >= before + 2 }
        #expect(try value(#"pgconn_login_up{target="db"}"#) == 1)

        try server.psql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'pgconn_exporter'")
        try eventually(timeout: .seconds(20)) {
            try value(#"pgconn_disconnects_total{target="db",reason="admin_shutdown"}"#) ?? 0 >= 1
                && value(#"pgconn_up{target="db"}"#) == 1
        }
        let sessions = try server.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgconn_exporter' AND usename = 'rotating'")
        #expect(sessions == "1", "the new session logged in with the new password")
        #expect(try value(#"pgconn_login_failures_total{target="db",reason="auth"}"#) ?? 0 == 0)
    }

    /// With no password configured, libpq's own `passfile` (or `~/.pgpass`) still supplies it, on the connect
    /// workers: the exporter does not get in its way.
    @Test func libpqsPassfileStillWorks() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        try server.psql("CREATE ROLE from_passfile LOGIN PASSWORD 'in-the-passfile'")
        let directory = try TemporaryDirectory()
        let passfile = try directory.write("pgpass", "127.0.0.1:\(server.port):*:from_passfile:in-the-passfile\n")
        chmod(passfile, 0o600)
        let (exporter, port) = try start(
            """
            targets:
              - name: db
                dsn: host=127.0.0.1 port=\(server.port) user=from_passfile dbname=postgres sslmode=disable passfile=\(passfile)
            """, in: directory)
        defer { exporter.kill() }
        try eventually(timeout: .seconds(20)) {
            let page = try httpGet(port: port, path: "/metrics").body
            return page.contains(#"pgconn_up{target="db"} 1"#) && page.contains(#"pgconn_login_up{target="db"} 1"#)
        }
    }

    /// A sentinel password in every place one can be given: a password file, an environment variable, a URI
    /// DSN, a key=value DSN, a module's password file, and by mistake where no password belongs. Targets that
    /// log in, and targets that fail (wrong role, refused port, a server that refuses the password) so that
    /// error messages are produced. Every output is searched for it.
    @Test func aPasswordNeverAppearsInAnyOutput() throws {
        let sentinel = "Sentinel-\(UInt32.random(in: 100_000...999_999))-pw"
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        try server.psql("CREATE ROLE secretive LOGIN PASSWORD '\(sentinel)'")
        let directory = try TemporaryDirectory()
        let passwordFile = try directory.write("password", sentinel + "\n")
        let host = "127.0.0.1:\(server.port)"
        let yaml = """
            targets:
              - name: by_file
                dsn: postgresql://secretive@\(host)/postgres?sslmode=disable
                password_file: \(passwordFile)
              - name: by_env
                dsn: postgresql://secretive@\(host)/postgres?sslmode=disable
                password_env: PGCONN_TEST_SECRET
              - name: in_uri
                dsn: postgresql://secretive:\(sentinel)@\(host)/postgres?sslmode=disable
              - name: in_keywords
                dsn: host=127.0.0.1 port=\(server.port) user=secretive password='\(sentinel)' dbname=postgres sslmode=disable
              - name: wrong_role
                dsn: postgresql://nobody:\(sentinel)@\(host)/postgres?sslmode=disable
              - name: refused
                dsn: host=127.0.0.1 port=1 user=secretive password=\(sentinel) connect_timeout=1
              - name: wrong_password
                dsn: postgresql://postgres@\(host)/postgres?sslmode=disable
                password_file: \(passwordFile)
            modules:
              secret:
                user: secretive
                database: postgres
                password_file: \(passwordFile)
                sslmode: disable
                allow: [127.0.0.1]
            """
        let (exporter, port) = try start(
            yaml, in: directory, arguments: ["--log.level=debug"], environment: ["PGCONN_TEST_SECRET": sentinel])
        defer { exporter.kill() }
        let config = directory.url.appendingPathComponent("config.yml").path
        try eventually(timeout: .seconds(30)) {
            let page = try httpGet(port: port, path: "/metrics").body
            return ["by_file", "by_env", "in_uri", "in_keywords"].allSatisfy {
                page.contains("pgconn_login_up{target=\"\($0)\"} 1")
            } && page.contains(#"pgconn_login_failures_total{target="wrong_role",reason="auth"}"#)
        }

        var outputs: [(String, String)] = []
        for path in [
            "/metrics", "/", "/health", "/health?format=json", "/api/v1/events", "/-/ready",
            "/probe?target=\(host)&module=secret&debug=true", "/probe?target=127.0.0.1:1&module=secret&debug=true",
        ] {
            outputs.append((path, try httpGet(port: port, path: path).body))
        }
        for target in ["by_file", "by_env", "in_uri", "in_keywords", "wrong_role", "refused", "wrong_password"] {
            for path in [
                "/health/\(target)", "/health/\(target)?format=json", "/api/v1/events?target=\(target)",
                "/probe?target=\(target)&debug=true",
            ] {
                outputs.append((path, try httpGet(port: port, path: path).body))
            }
        }
        let gzip = try httpRequest(port: port, path: "/metrics", headers: ["Accept-Encoding": "gzip"]).body
        let gzipFile = directory.url.appendingPathComponent("metrics.gz")
        try gzip.write(to: gzipFile)
        outputs.append(("/metrics (gzip)", try runCommand("/bin/gzip", ["-dc", gzipFile.path]).stdout))

        let binary = try ExporterBinary.url().path
        let check = try runCommand(binary, ["--config.check", "--config.file=\(config)"])
        outputs.append(("--config.check", check.stdout + check.stderr))
        // Mistakes: a password written in a module, a DSN put where a name goes, a DSN libpq refuses.
        let mistaken = try directory.write(
            "mistaken.yml",
            """
            targets:
              - name: postgresql://u:\(sentinel)@h/db
                dsn: host=h password=\(sentinel) nonsense=1
              - \(sentinel)
            modules:
              m:
                user: u
                options: {password: \(sentinel)}
                allow: [h]
            """)
        let refused = try runCommand(binary, ["--config.check", "--config.file=\(mistaken)"])
        #expect(refused.status == 1)
        outputs.append(("a config with mistakes", refused.stdout + refused.stderr))

        exporter.terminate()
        _ = try exporter.waitForExit(timeout: .seconds(5))
        outputs.append(("the log", exporter.stderr()))

        for (name, text) in outputs {
            #expect(!text.contains(sentinel), "\(name) shows the password:\n\(text)")
        }
        let log = exporter.stderr()
        #expect(log.contains("target=wrong_role"), "the failures were logged, so the search means something")
        #expect(log.contains("target=refused"))
        #expect(outputs.first { $0.0 == "a config with mistakes" }?.1.contains("error") == true)
        print("searched \(outputs.count) outputs, \(outputs.reduce(0) { $0 + $1.1.utf8.count }) bytes")
    }
}

extension String {
    /// For a `write` whose path is not needed.
    fileprivate func discard() {}
}
