import Foundation
import Glibc
import Testing

@testable import PGConnCore
@testable import PGConnPostgres

@Suite struct ConnectionParametersTests {
    func target(password: PasswordSource = .none) -> TargetConfig {
        TargetConfig(
            name: "t", dsn: "host=db",
            summary: DSNSummary(host: "db", port: "5432", database: "d", user: "u", sslmode: "prefer"),
            password: password, probeTimeout: .milliseconds(1500),
            keepalives: KeepaliveConfig(
                idle: .seconds(10), interval: .milliseconds(1500), count: 3, userTimeout: .seconds(15)))
    }

    func value(_ key: String, in pairs: [(String, String)]) -> String? { pairs.first { $0.0 == key }?.1 }

    func overrides(
        _ purpose: ConnectionParameters.Purpose, dsnValues: [String: String] = [:], password: String? = nil,
        hostaddr: String? = nil
    ) -> [(String, String)] {
        ConnectionParameters.overrides(
            for: target(), purpose: purpose, dsnValues: dsnValues, password: password,
            resolved: hostaddr.map { ResolvedHosts(hostaddr: $0) })
    }

    @Test func keepalivesAndApplicationNameAreSet() {
        let session = overrides(.session)
        #expect(value("application_name", in: session) == "pgconn_exporter")
        #expect(value("keepalives", in: session) == "1")
        #expect(value("keepalives_idle", in: session) == "10")
        #expect(value("keepalives_interval", in: session) == "2", "rounded up to whole seconds")
        #expect(value("keepalives_count", in: session) == "3")
        #expect(value("tcp_user_timeout", in: session) == "15000")
        #expect(value("password", in: session) == nil)
        #expect(value("hostaddr", in: session) == nil)
        #expect(value("application_name", in: overrides(.loginCheck)) == "pgconn_exporter_login")
        #expect(value("password", in: overrides(.session, password: "pw")) == "pw")
        #expect(value("hostaddr", in: overrides(.session, hostaddr: "10.0.0.1,")) == "10.0.0.1,")
        let expanded = ConnectionParameters.overrides(
            for: target(), purpose: .session, dsnValues: [:], password: nil,
            resolved: ResolvedHosts(hostaddr: "10.0.0.1,10.0.0.2,10.0.0.3", host: "db,db,db2", port: "5432,5432,6432"))
        #expect(value("hostaddr", in: expanded) == "10.0.0.1,10.0.0.2,10.0.0.3")
        #expect(value("host", in: expanded) == "db,db,db2")
        #expect(value("port", in: expanded) == "5432,5432,6432")
    }

    @Test func theServerBoundsTheSessionsQueriesByProbeTimeout() {
        #expect(value("options", in: overrides(.session)) == "-c statement_timeout=1500 -c lock_timeout=1500")
        #expect(value("options", in: overrides(.loginCheck)) == nil, "a login check sends no query")
        let userOptions = overrides(.session, dsnValues: ["options": "-c search_path=app"])
        #expect(
            value("options", in: userOptions) == "-c search_path=app -c statement_timeout=1500 -c lock_timeout=1500")
        let userTimeout = overrides(.session, dsnValues: ["options": "-c statement_timeout=10s"])
        #expect(value("options", in: userTimeout) == "-c statement_timeout=10s -c lock_timeout=1500", "the user's wins")
        let both = overrides(.session, dsnValues: ["options": "-c statement_timeout=0 -c lock_timeout=0"])
        #expect(value("options", in: both) == nil)
    }

    @Test func gssapiEncryptionIsOffUnlessAskedFor() {
        #expect(value("gssencmode", in: overrides(.session)) == "disable")
        #expect(value("gssencmode", in: overrides(.session, dsnValues: ["gssencmode": "require"])) == nil)
    }

    @Test func passwordFileIsReadOnEveryCallFirstLineOnly() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("pw-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: file) }
        try "first\nignored\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(try ConnectionParameters.readPassword(.file(file.path)).get() == "first")
        try "rotated\r\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(try ConnectionParameters.readPassword(.file(file.path)).get() == "rotated")
        #expect(try ConnectionParameters.readPassword(.none).get() == nil)
    }

    @Test func unreadablePasswordSourcesFailBeforeTheServerSeesAnything() {
        #expect(
            throws: Failure(
                reason: .passwordUnavailable,
                message: "cannot read password_file /nonexistent/pw: No such file or directory")
        ) {
            try ConnectionParameters.readPassword(.file("/nonexistent/pw")).get()
        }
        #expect(
            throws: Failure(reason: .passwordUnavailable, message: "password_env PGCONN_TEST_UNSET_VARIABLE is not set")
        ) {
            try ConnectionParameters.readPassword(.environment("PGCONN_TEST_UNSET_VARIABLE")).get()
        }
    }

    /// A FIFO as password_file froze every target when it was read with a blocking open on the loop.
    @Test(.timeLimit(.minutes(1))) func aFIFOIsRefusedWithoutBlocking() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("pw-fifo-\(UUID().uuidString)").path
        #expect(mkfifo(path, 0o600) == 0)
        defer { unlink(path) }
        #expect(
            throws: Failure(
                reason: .passwordUnavailable, message: "cannot read password_file \(path): not a regular file")
        ) {
            try ConnectionParameters.readPassword(.file(path)).get()
        }
        #expect(
            throws: Failure(
                reason: .passwordUnavailable, message: "cannot read password_file /dev/null: not a regular file")
        ) {
            try ConnectionParameters.readPassword(.file("/dev/null")).get()
        }
    }
}
