import Foundation
import PGConnCore
import Testing

/// A server with TLS on: sessions over TLS, and certificate failures classified as `tls`.
@Suite(.serialized) struct TLSTests {
    /// A self-signed certificate for localhost / 127.0.0.1 and its key, made with openssl, readable by the server.
    struct Certificate {
        let directory: TemporaryDirectory
        let certificate: String
        let key: String

        init(commonName: String) throws {
            directory = try TemporaryDirectory()
            certificate = directory.url.appendingPathComponent("server.crt").path
            key = directory.url.appendingPathComponent("server.key").path
            let result = try runCommand(
                "/usr/bin/openssl",
                [
                    "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-keyout", key, "-out", certificate,
                    "-subj", "/CN=\(commonName)", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                ])
            guard result.status == 0 else { throw TestPostgresError("openssl req failed: \(result.stderr)") }
            chmod(key, 0o600)
            chmod(directory.url.path, 0o755)
            try ServerUser.handOver(URL(fileURLWithPath: certificate))
            try ServerUser.handOver(URL(fileURLWithPath: key))
        }
    }

    @Test func sessionsRunOverTLSAndCertificateFailuresAreClassified() throws {
        let serverCertificate = try Certificate(commonName: "pgconn-test-server")
        let otherCA = try Certificate(commonName: "pgconn-test-other-ca")
        let server = try TestPostgres.start(settings: [
            "ssl": "on", "ssl_cert_file": serverCertificate.certificate, "ssl_key_file": serverCertificate.key,
        ])
        defer { server.cleanup() }
        let password = "password=\(TestPostgres.superuserPassword)"
        let fixture = try MonitorFixture([
            try testTarget("require", dsn: server.dsn(password: TestPostgres.superuserPassword) + " sslmode=require"),
            try testTarget(
                "verify_full",
                dsn: "host=localhost port=\(server.port) user=postgres \(password) sslmode=verify-full "
                    + "sslrootcert=\(serverCertificate.certificate)"),
            try testTarget(
                "wrong_ca",
                dsn: "host=127.0.0.1 port=\(server.port) user=postgres \(password) sslmode=verify-ca "
                    + "sslrootcert=\(otherCA.certificate)", loginInterval: .milliseconds(300)),
        ])
        try fixture.await("require") { $0.isSessionUp }
        try fixture.await("verify_full") { $0.isSessionUp }
        let encrypted = try server.psql(
            "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) "
                + "WHERE ssl AND application_name = 'pgconn_exporter'")
        #expect(encrypted == "2", "both sessions are encrypted")

        try fixture.await("wrong_ca") {
            $0.connectionFailures[.tls, default: 0] >= 1 && $0.loginFailures[.tls, default: 0] >= 1
        }
        let wrongCA = fixture.series("wrong_ca")
        #expect(wrongCA.totalConnectionFailures == wrongCA.connectionFailures[.tls], "\(wrongCA.connectionFailures)")
        #expect(wrongCA.probes == 0)
    }

    /// The TLS version, cipher and the server certificate's expiry of a session, on /metrics, and the same
    /// expiry on /probe (as blackbox_exporter names it), equal to the certificate's notAfter as openssl reads it.
    @Test func theServerCertificatesExpiryIsExportedForSessionsAndProbes() throws {
        let certificate = try Certificate(commonName: "pgconn-test-expiry")
        let server = try TestPostgres.start(settings: [
            "ssl": "on", "ssl_cert_file": certificate.certificate, "ssl_key_file": certificate.key,
        ])
        defer { server.cleanup() }
        let endDate = try runCommand(
            "/usr/bin/openssl", ["x509", "-noout", "-enddate", "-in", certificate.certificate])
        let notAfterText = endDate.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
            .replacingOccurrences(of: "notAfter=", with: "")
        let expected = try runCommand("/bin/date", ["-u", "-d", notAfterText, "+%s"]).stdout
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(Int(expected) != nil, "openssl said \(endDate.stdout)")

        let directory = try TemporaryDirectory()
        let (exporter, port) = try ExporterProcess.start(
            config:
                """
                defaults:
                  probe_interval: 300ms
                  probe_timeout: 250ms
                  login_interval: 0s
                targets:
                  - name: tls
                    dsn: \(server.dsn(password: TestPostgres.superuserPassword)) sslmode=require
                  - name: plain
                    dsn: \(server.dsn(password: TestPostgres.superuserPassword)) sslmode=disable
                """, in: directory)
        defer { exporter.kill() }
        try eventually(timeout: .seconds(20)) {
            try httpGet(port: port, path: "/metrics").body.contains(#"pgconn_up{target="tls"} 1"#)
        }
        let page = try httpGet(port: port, path: "/metrics").body
        #expect(
            page.contains(#"pgconn_tls_cert_not_after_timestamp_seconds{target="tls"} \#(expected)"# + "\n"), "\(page)")
        #expect(page.contains(#"pgconn_tls_info{target="tls",version="TLSv1."#))
        #expect(!page.contains(#"pgconn_tls_info{target="plain""#), "no TLS, no TLS series")
        #expect(page.contains(#"pgconn_session_server_info{target="tls",host="127.0.0.1",port="\#(server.port)"} 1"#))

        let probe = try httpGet(port: port, path: "/probe?target=tls").body
        #expect(probe.contains("probe_ssl_earliest_cert_expiry \(expected)\n"), "\(probe)")
        #expect(probe.contains(#"probe_tls_version_info{version="TLSv1."#))
        let plain = try httpGet(port: port, path: "/probe?target=plain").body
        #expect(plain.contains("probe_success 1") && !plain.contains("probe_ssl_earliest_cert_expiry"))
    }
}
