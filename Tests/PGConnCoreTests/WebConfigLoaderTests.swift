import Testing

@testable import PGConnCore

/// `--web.config.file` in exporter-toolkit's format: what is accepted, and an error naming the key otherwise.
@Suite struct WebConfigLoaderTests {
    static let hash = "$2y$10$QzRban6sW14UFO3b0pgu6eHSpvqAKxK5CTcSRTEFL4fSwaZ3A7AfW"

    private func load(_ yaml: String, directory: String = "/etc/pgconn") -> Result<WebConfig, ConfigError> {
        WebConfigLoader.load(yaml: yaml, directory: directory)
    }

    private func errors(_ yaml: String) -> [String] {
        if case .failure(let error) = load(yaml) { return error.messages }
        return []
    }

    @Test func readsTheToolkitsExampleWithRelativeFilesTakenFromTheConfigsDirectory() throws {
        let config = try load(
            """
            tls_server_config:
              cert_file: server.crt
              key_file: /secrets/server.key
              client_auth_type: RequireAndVerifyClientCert
              client_ca_file: ca.crt
              min_version: TLS13
            http_server_config:
              http2: true
              headers:
                X-Frame-Options: deny
                Strict-Transport-Security: max-age=31536000
                X-XSS-Protection: ""
            basic_auth_users:
              alice: \(Self.hash)
            """
        ).get()
        let tls = try #require(config.tls)
        #expect(tls.certificate == .file("/etc/pgconn/server.crt"))
        #expect(tls.key == .file("/secrets/server.key"))
        #expect(tls.clientCA == .file("/etc/pgconn/ca.crt"))
        #expect(tls.clientAuth == .requireAndVerifyClientCert)
        #expect(tls.minVersion == .tls13 && tls.maxVersion == .tls13)
        #expect(tls.files == ["/etc/pgconn/server.crt", "/secrets/server.key", "/etc/pgconn/ca.crt"])
        // A blank header is unset, as exporter-toolkit documents.
        #expect(
            config.headers == [
                HTTPHeaderSetting(name: "X-Frame-Options", value: "deny"),
                HTTPHeaderSetting(name: "Strict-Transport-Security", value: "max-age=31536000"),
            ])
        #expect(config.basicAuthUsers == ["alice": Self.hash])
    }

    @Test func anEmptyFileOrATLSSectionWithoutACertificateIsPlainHTTP() throws {
        #expect(try load("").get() == .plain)
        #expect(try load("tls_server_config: {}\n").get().tls == nil)
        #expect(try load("tls_server_config:\n  min_version: TLS12\n").get().tls == nil)
    }

    @Test func inlinePEMIsTakenAsIsAndNeverEchoedInAnError() throws {
        let config = try load(
            """
            tls_server_config:
              cert: "-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n"
              key: "-----BEGIN PRIVATE KEY-----\\nSECRETKEY\\n-----END PRIVATE KEY-----\\n"
            """
        ).get()
        #expect(config.tls?.certificate == .inline("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
        let messages = errors("tls_server_config:\n  cert_file: a.crt\n  key: [SECRETKEY]\n")
        #expect(messages == ["tls_server_config.key: expected PEM text, got a sequence"])
        let both = errors("tls_server_config:\n  cert: x\n  cert_file: a.crt\n  key_file: a.key\n")
        #expect(both == ["tls_server_config: cert and cert_file are mutually exclusive"])
    }

    @Test func gnutlsPrioritiesKeepOnlyTheVersionsAsked() {
        let settings = TLSServerSettings(certificate: .file("c"), key: .file("k"), minVersion: .tls12)
        #expect(settings.gnutlsPriorities == "NORMAL:-VERS-TLS1.0:-VERS-TLS1.1:%SERVER_PRECEDENCE")
        let only13 = TLSServerSettings(
            certificate: .file("c"), key: .file("k"), minVersion: .tls13, preferServerCipherSuites: false)
        #expect(only13.gnutlsPriorities == "NORMAL:-VERS-TLS1.0:-VERS-TLS1.1:-VERS-TLS1.2")
    }

    @Test(arguments: [
        ("nonsense: 1\n", "nonsense: unknown key"),
        ("rate_limit:\n  burst: 2\n", "rate_limit: not supported by pgconn_exporter"),
        ("tls_server_config:\n  cert_file: a\n", "tls_server_config: cert_file given without key_file"),
        ("tls_server_config:\n  key_file: a\n", "tls_server_config: key given without cert_file"),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: RequireAndVerifyClientCert\n",
            "tls_server_config.client_auth_type: RequireAndVerifyClientCert needs client_ca_file"
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  client_auth_type: Always\n",
            "tls_server_config.client_auth_type: unknown client auth type \"Always\""
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: TLS13\n  max_version: TLS12\n",
            "tls_server_config: min_version TLS13 is above max_version TLS12"
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  min_version: SSL3\n",
            "tls_server_config.min_version: unknown TLS version \"SSL3\""
        ),
        (
            "tls_server_config:\n  cert_file: a\n  key_file: b\n  cipher_suites: [TLS_AES_128_GCM_SHA256]\n",
            "tls_server_config.cipher_suites: not supported by pgconn_exporter"
        ),
        ("tls_server_config:\n  cert_file: a\n  key_file: b\n  sni: x\n", "tls_server_config.sni: unknown key"),
        ("http_server_config:\n  headers:\n    Server: me\n", "http_server_config.headers.Server: this header cannot"),
        (
            "http_server_config:\n  headers:\n    X-Frame-Options: allow\n",
            "http_server_config.headers.X-Frame-Options: \"allow\" is not one of deny, sameorigin"
        ),
        ("http_server_config:\n  http2: maybe\n", "http_server_config.http2: expected true or false"),
        ("basic_auth_users:\n  bob: hunter2\n", "basic_auth_users.bob: expected a bcrypt hash"),
        ("basic_auth_users:\n  bob: \n", "basic_auth_users.bob: expected a bcrypt hash"),
        ("basic_auth_users: [bob]\n", "basic_auth_users: expected a mapping"),
        ("tls_server_config: [\n", "YAML syntax error at line 2"),
    ])
    func mistakesNameTheirKey(yaml: String, expected: String) {
        let messages = errors(yaml)
        #expect(messages.contains { $0.hasPrefix(expected) || $0.contains(expected) }, "\(messages)")
    }

    @Test func aPlainPasswordWrittenAsAHashIsNotEchoed() {
        let messages = errors("basic_auth_users:\n  bob: correct-horse-battery\n")
        #expect(messages.count == 1)
        #expect(!messages.joined().contains("correct-horse"))
    }

    @Test func bcryptHashShapes() {
        #expect(WebConfigLoader.isBcryptHash(Self.hash))
        #expect(WebConfigLoader.isBcryptHash("$2b$" + Self.hash.dropFirst(4)))
        #expect(WebConfigLoader.isBcryptHash("$2a$" + Self.hash.dropFirst(4)))
        #expect(!WebConfigLoader.isBcryptHash("$2x$" + Self.hash.dropFirst(4)))
        #expect(!WebConfigLoader.isBcryptHash("$2y$03$" + Self.hash.dropFirst(7)))
        #expect(!WebConfigLoader.isBcryptHash(String(Self.hash.dropLast())))
        #expect(!WebConfigLoader.isBcryptHash(String(Self.hash.dropLast()) + "!"))
        #expect(!WebConfigLoader.isBcryptHash("$6$salt$hash"))
    }
}
