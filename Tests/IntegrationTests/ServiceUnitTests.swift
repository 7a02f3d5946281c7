import Foundation
import Testing

/// `config/pgconn_exporter.service` and `make install`: the unit as systemd reads it, its hardening score, and
/// the installed tree. (The .deb is checked by scripts/test-package.sh, which `make test` runs after the Swift
/// tests, because it needs the release build.)
@Suite(.serialized) struct ServiceUnitTests {
    static let unit = repositoryRoot.appendingPathComponent("config/pgconn_exporter.service")

    /// The unit with ExecStart pointing at the built binary (systemd-analyze verify checks that it exists).
    private func unitForTheBuiltBinary(in directory: TemporaryDirectory) throws -> String {
        let text = try String(contentsOf: Self.unit, encoding: .utf8)
            .replacingOccurrences(of: "/usr/bin/pgconn_exporter", with: try ExporterBinary.url().path)
        return try directory.write("pgconn_exporter.service", text)
    }

    @Test func systemdVerifiesTheUnit() throws {
        let directory = try TemporaryDirectory()
        let result = try runCommand("/usr/bin/systemd-analyze", ["verify", try unitForTheBuiltBinary(in: directory)])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.isEmpty, "no warning: \(result.stderr)")
    }

    /// The README states the score; a change to the unit that weakens it fails here.
    @Test func theUnitIsHardened() throws {
        let directory = try TemporaryDirectory()
        let result = try runCommand(
            "/usr/bin/systemd-analyze", ["security", "--offline=yes", try unitForTheBuiltBinary(in: directory)])
        let line = try #require(
            result.stdout.split(separator: "\n").first { $0.contains("Overall exposure level") }, "\(result.stdout)")
        let score = try #require(Double(line.split(separator: ":").last?.split(separator: " ").first ?? ""))
        print("systemd-analyze security: \(score)")
        #expect(score <= 1.5, "\(line)")
        let text = try String(contentsOf: Self.unit, encoding: .utf8)
        for setting in [
            "DynamicUser=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
            "CapabilityBoundingSet=\n", "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "SystemCallFilter=@system-service", "LoadCredential=monitor.password:",
            "ExecReload=/bin/kill -HUP $MAINPID",
        ] {
            #expect(text.contains(setting), "missing \(setting)")
        }
    }

    @Test func makeInstallPutsEveryFileUnderThePrefixAndKeepsAnEditedConfig() throws {
        let directory = try TemporaryDirectory()
        let prefix = directory.url.appendingPathComponent("opt").path
        let install = repositoryRoot.appendingPathComponent("scripts/install.sh").path
        let environment = ProcessInfo.processInfo.environment.merging(
            ["PREFIX": prefix, "BIN": try ExporterBinary.url().path]) { _, new in new }
        let first = try runCommand("/bin/bash", [install], environment: environment)
        #expect(first.status == 0, "\(first.stderr)")
        for file in [
            "bin/pgconn_exporter", "lib/systemd/system/pgconn_exporter.service",
            "etc/pgconn_exporter/pgconn_exporter.yml",
            "etc/pgconn_exporter/web.yml", "etc/default/pgconn_exporter", "share/doc/pgconn-exporter/README.md",
            "share/doc/pgconn-exporter/example.yml", "share/doc/pgconn-exporter/prometheus/alerts.yml",
            "share/doc/pgconn-exporter/dashboards/pgconn-overview.json",
        ] {
            #expect(FileManager.default.fileExists(atPath: "\(prefix)/\(file)"), "missing \(file)")
        }
        let unit = try String(contentsOfFile: "\(prefix)/lib/systemd/system/pgconn_exporter.service", encoding: .utf8)
        #expect(
            unit.contains(
                "ExecStart=\(prefix)/bin/pgconn_exporter --config.file=\(prefix)/etc/pgconn_exporter/pgconn_exporter.yml"
            ))
        #expect(unit.contains("EnvironmentFile=-\(prefix)/etc/default/pgconn_exporter"))
        #expect(!unit.contains("/usr/bin/pgconn_exporter"))
        let installed = try runCommand(
            "\(prefix)/bin/pgconn_exporter",
            [
                "--config.check", "--config.file=\(prefix)/etc/pgconn_exporter/pgconn_exporter.yml",
                "--web.config.file=\(prefix)/etc/pgconn_exporter/web.yml",
            ])
        #expect(installed.status == 0, "the installed config is valid: \(installed.stderr)")

        let config = "\(prefix)/etc/pgconn_exporter/pgconn_exporter.yml"
        try "# edited\n".write(toFile: config, atomically: true, encoding: .utf8)
        let second = try runCommand("/bin/bash", [install], environment: environment)
        #expect(second.status == 0)
        #expect(try String(contentsOfFile: config, encoding: .utf8) == "# edited\n")
        #expect(FileManager.default.fileExists(atPath: config + ".dist"))
        #expect(second.stdout.contains("kept \(config)"))
    }
}
