import Foundation
import Testing

@testable import PGConnCore
@testable import PGConnPostgres

@Suite struct ConnectionParametersTests {
    func target(password: PasswordSource) -> TargetConfig {
        TargetConfig(
            name: "t", dsn: "host=db", summary: DSNSummary(host: "db", port: "5432", database: "d", user: "u", sslmode: "prefer"),
            password: password,
            keepalives: KeepaliveConfig(idle: .seconds(10), interval: .milliseconds(1500), count: 3, userTimeout: .seconds(15)))
    }

    func value(_ key: String, in pairs: [(String, String)]) -> String? { pairs.first { $0.0 == key }?.1 }

    @Test func keepalivesAndApplicationNameAreSet() throws {
        let session = try ConnectionParameters.overrides(for: target(password: .none), purpose: .session).get()
        #expect(value("application_name", in: session) == "pgconn_exporter")
        #expect(value("keepalives", in: session) == "1")
        #expect(value("keepalives_idle", in: session) == "10")
        #expect(value("keepalives_interval", in: session) == "2", "rounded up to whole seconds")
        #expect(value("keepalives_count", in: session) == "3")
        #expect(value("tcp_user_timeout", in: session) == "15000")
        #expect(value("password", in: session) == nil)
        let login = try ConnectionParameters.overrides(for: target(password: .none), purpose: .loginCheck).get()
        #expect(value("application_name", in: login) == "pgconn_exporter_login")
    }

    @Test func passwordFileIsReadOnEveryCallFirstLineOnly() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pw-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        try "first\nignored\n".write(to: file, atomically: true, encoding: .utf8)
        let config = target(password: .file(file.path))
        #expect(value("password", in: try ConnectionParameters.overrides(for: config, purpose: .session).get()) == "first")
        try "rotated\r\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(value("password", in: try ConnectionParameters.overrides(for: config, purpose: .session).get()) == "rotated")
    }

    @Test func unreadablePasswordSourcesFailWithReasonPasswordUnavailable() {
        let missing = ConnectionParameters.overrides(for: target(password: .file("/nonexistent/pw")), purpose: .session)
        let noFile = "cannot read password_file /nonexistent/pw: No such file or directory"
        #expect(throws: Failure(reason: .passwordUnavailable, message: noFile)) {
            try missing.get()
        }
        let unset = ConnectionParameters.overrides(
            for: target(password: .environment("PGCONN_TEST_UNSET_VARIABLE")), purpose: .session)
        let noVariable = "password_env PGCONN_TEST_UNSET_VARIABLE is not set"
        #expect(throws: Failure(reason: .passwordUnavailable, message: noVariable)) {
            try unset.get()
        }
    }
}
