internal import Yams

/// The `--web.config.file` contents, in the exporter-toolkit format every Prometheus exporter accepts
/// (`tls_server_config`, `http_server_config`, `basic_auth_users`), so one file serves them all.
///
/// Only the names of files are held here; ``WebConfigLoader`` does no I/O. The executable reads the
/// certificate, key and CA files when it starts, on SIGHUP and when one of them changes.
public struct WebConfig: Sendable, Equatable {
    /// Serve HTTPS with these; `nil` for plain HTTP (also when `tls_server_config` names no certificate, as
    /// exporter-toolkit does).
    public var tls: TLSServerSettings?
    /// Added to every response, in file order (only the security headers exporter-toolkit allows).
    public var headers: [HTTPHeaderSetting]
    /// User name to bcrypt hash; empty when no authentication is asked for.
    public var basicAuthUsers: [String: String]

    public init(
        tls: TLSServerSettings? = nil, headers: [HTTPHeaderSetting] = [], basicAuthUsers: [String: String] = [:]
    ) {
        self.tls = tls
        self.headers = headers
        self.basicAuthUsers = basicAuthUsers
    }

    /// No TLS, no headers, no users: what the exporter serves without `--web.config.file`.
    public static let plain = WebConfig()
}

/// A response header from `http_server_config.headers`.
public struct HTTPHeaderSetting: Sendable, Equatable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// `tls_server_config`: the server's certificate and key, and what is asked of clients.
public struct TLSServerSettings: Sendable, Equatable {
    /// PEM text given inline (`cert:`, `key:`, `client_ca:`) or the path of a PEM file.
    public enum Source: Sendable, Equatable {
        case inline(String)
        /// Absolute, or made absolute against the web config file's directory.
        case file(String)

        public var path: String? {
            if case .file(let path) = self { path } else { nil }
        }
    }

    /// Go's `tls.ClientAuthType` names, as exporter-toolkit takes them.
    public enum ClientAuth: String, Sendable, Equatable, CaseIterable {
        case noClientCert = "NoClientCert"
        case requestClientCert = "RequestClientCert"
        case requireAnyClientCert = "RequireAnyClientCert"
        case verifyClientCertIfGiven = "VerifyClientCertIfGiven"
        case requireAndVerifyClientCert = "RequireAndVerifyClientCert"

        /// Whether the handshake fails without a client certificate.
        public var requiresCertificate: Bool { self == .requireAnyClientCert || self == .requireAndVerifyClientCert }
        /// Whether a certificate the client sends must chain to `client_ca`.
        public var verifies: Bool { self == .verifyClientCertIfGiven || self == .requireAndVerifyClientCert }
    }

    /// `TLS10` to `TLS13`.
    public enum Version: String, Sendable, Equatable, Comparable, CaseIterable {
        case tls10 = "TLS10"
        case tls11 = "TLS11"
        case tls12 = "TLS12"
        case tls13 = "TLS13"

        var rank: Int { Self.allCases.firstIndex(of: self)! }
        public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rank < rhs.rank }
        /// GnuTLS's name in a priority string: `VERS-TLS1.2`.
        public var gnutlsName: String { "VERS-TLS1.\(rank)" }
    }

    public var certificate: Source
    public var key: Source
    public var clientAuth: ClientAuth
    public var clientCA: Source?
    public var minVersion: Version
    public var maxVersion: Version
    /// `prefer_server_cipher_suites` (default true): the server's order of ciphers wins.
    public var preferServerCipherSuites: Bool

    public init(
        certificate: Source, key: Source, clientAuth: ClientAuth = .noClientCert, clientCA: Source? = nil,
        minVersion: Version = .tls12, maxVersion: Version = .tls13, preferServerCipherSuites: Bool = true
    ) {
        self.certificate = certificate
        self.key = key
        self.clientAuth = clientAuth
        self.clientCA = clientCA
        self.minVersion = minVersion
        self.maxVersion = maxVersion
        self.preferServerCipherSuites = preferServerCipherSuites
    }

    /// A GnuTLS priority string: its defaults, with only the versions from `min_version` to `max_version`.
    public var gnutlsPriorities: String {
        var text = "NORMAL"
        for version in Version.allCases where version < minVersion || version > maxVersion {
            text += ":-\(version.gnutlsName)"
        }
        if preferServerCipherSuites { text += ":%SERVER_PRECEDENCE" }
        return text
    }

    /// The files to watch for a change: certificate, key and client CA, where they are files.
    public var files: [String] {
        [certificate.path, key.path, clientCA?.path].compactMap { $0 }
    }
}

/// Reads `--web.config.file` text into a ``WebConfig``, or every reason it cannot, each naming its key.
public enum WebConfigLoader {
    /// The headers exporter-toolkit lets a web config set, and the values it accepts (`nil`: any).
    static let allowedHeaders: [(name: String, values: Set<String>?)] = [
        ("Content-Security-Policy", nil),
        ("X-Frame-Options", ["deny", "sameorigin"]),
        ("X-Content-Type-Options", ["nosniff"]),
        ("X-XSS-Protection", nil),
        ("Strict-Transport-Security", nil),
    ]

    /// Loads web config text.
    ///
    /// - Parameter directory: the web config file's directory; relative file names are taken against it, as
    ///   exporter-toolkit does.
    public static func load(yaml: String, directory: String) -> Result<WebConfig, ConfigError> {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            return .failure(ConfigError(messages: [ConfigLoader.syntaxMessage(error)]))
        } catch {
            return .failure(ConfigError(messages: ["invalid YAML: \(error)"]))
        }
        var reader = ConfigReader()
        let config = read(root ?? .mapping(.init([])), directory: directory, reader: &reader)
        return reader.messages.isEmpty ? .success(config) : .failure(ConfigError(messages: reader.messages))
    }

    private static func read(_ root: Node, directory: String, reader: inout ConfigReader) -> WebConfig {
        var config = WebConfig()
        guard
            let entries = reader.mapping(
                root, at: "", expected: "a mapping with tls_server_config, http_server_config and basic_auth_users")
        else { return config }
        for (key, value) in entries {
            switch key {
            case "tls_server_config": config.tls = readTLS(value, directory: directory, reader: &reader)
            case "http_server_config": config.headers = readHTTPServer(value, reader: &reader)
            case "basic_auth_users": config.basicAuthUsers = readUsers(value, reader: &reader)
            case "rate_limit":
                reader.report(key, "not supported by pgconn_exporter (the HTTP server's connection limits apply)")
            default: reader.report(key, "unknown key")
            }
        }
        return config
    }

    private static func readTLS(_ node: Node, directory: String, reader: inout ConfigReader) -> TLSServerSettings? {
        let section = "tls_server_config"
        let reported = reader.messages.count
        guard let entries = reader.mapping(node, at: section) else { return nil }
        var inline: [String: String] = [:]
        var files: [String: String] = [:]
        var clientAuth = TLSServerSettings.ClientAuth.noClientCert
        var minVersion = TLSServerSettings.Version.tls12
        var maxVersion = TLSServerSettings.Version.tls13
        var preferServer = true
        for (key, value) in entries {
            let path = ConfigReader.path(section, key)
            switch key {
            case "cert", "key", "client_ca":
                // The key's PEM is a secret: a type error must not echo it.
                guard case .scalar(let scalar) = value, !ConfigReader.isNull(value) else {
                    reader.report(path, "expected PEM text, got \(ConfigReader.describe(value, revealing: false))")
                    continue
                }
                inline[key] = scalar.string
            case "cert_file", "key_file", "client_ca_file":
                if let name = reader.string(value, at: path), !name.isEmpty {
                    files[String(key.dropLast("_file".count))] = absolute(name, in: directory)
                }
            case "client_auth_type":
                guard let text = reader.string(value, at: path) else { continue }
                if let parsed = TLSServerSettings.ClientAuth(rawValue: text) {
                    clientAuth = parsed
                } else {
                    let names = TLSServerSettings.ClientAuth.allCases.map(\.rawValue).joined(separator: ", ")
                    reader.report(path, "unknown client auth type \"\(text)\" (one of \(names))")
                }
            case "min_version", "max_version":
                guard let text = reader.string(value, at: path) else { continue }
                guard let version = TLSServerSettings.Version(rawValue: text) else {
                    reader.report(path, "unknown TLS version \"\(text)\" (TLS10, TLS11, TLS12 or TLS13)")
                    continue
                }
                if key == "min_version" { minVersion = version } else { maxVersion = version }
            case "prefer_server_cipher_suites":
                if let flag = reader.boolean(value, at: path) { preferServer = flag }
            case "cipher_suites", "curve_preferences", "client_allowed_sans":
                reader.report(path, "not supported by pgconn_exporter (GnuTLS negotiates from its defaults)")
            default:
                reader.report(path, "unknown key")
            }
        }
        func source(_ name: String) -> TLSServerSettings.Source? {
            if inline[name] != nil, files[name] != nil {
                reader.report(section, "\(name) and \(name)_file are mutually exclusive")
                return nil
            }
            return inline[name].map { .inline($0) } ?? files[name].map { .file($0) }
        }
        let certificate = source("cert")
        let key = source("key")
        let clientCA = source("client_ca")
        if minVersion > maxVersion {
            reader.report(section, "min_version \(minVersion.rawValue) is above max_version \(maxVersion.rawValue)")
        }
        if clientAuth.verifies, clientCA == nil {
            reader.report(
                ConfigReader.path(section, "client_auth_type"),
                "\(clientAuth.rawValue) needs client_ca_file (the authority that signs client certificates)")
        }
        guard let certificate, let key else {
            // exporter-toolkit serves plain HTTP when no certificate is configured; a part already reported
            // above (a bad value, both forms given) is not reported again as missing.
            if certificate == nil, key == nil, inline["cert"] == nil, files["cert"] == nil, inline["key"] == nil,
                files["key"] == nil, reader.messages.count == reported
            {
                return nil
            }
            if reader.messages.count > reported { return nil }
            reader.report(
                section, certificate == nil ? "key given without cert_file" : "cert_file given without key_file")
            return nil
        }
        return TLSServerSettings(
            certificate: certificate, key: key, clientAuth: clientAuth, clientCA: clientCA, minVersion: minVersion,
            maxVersion: maxVersion, preferServerCipherSuites: preferServer)
    }

    private static func readHTTPServer(_ node: Node, reader: inout ConfigReader) -> [HTTPHeaderSetting] {
        let section = "http_server_config"
        guard let entries = reader.mapping(node, at: section) else { return [] }
        var headers: [HTTPHeaderSetting] = []
        for (key, value) in entries {
            let path = ConfigReader.path(section, key)
            switch key {
            case "http2":
                // Accepted for the shared format; libmicrohttpd speaks HTTP/1.1 only.
                _ = reader.boolean(value, at: path)
            case "headers":
                guard let pairs = reader.mapping(value, at: path) else { continue }
                for (name, valueNode) in pairs {
                    let headerPath = ConfigReader.path(path, name)
                    guard let allowed = allowedHeaders.first(where: { $0.name.lowercased() == name.lowercased() })
                    else {
                        let names = allowedHeaders.map(\.name).joined(separator: ", ")
                        reader.report(headerPath, "this header cannot be configured (one of \(names))")
                        continue
                    }
                    guard let text = reader.string(valueNode, at: headerPath) else { continue }
                    if text.isEmpty { continue }  // "Unset if blank."
                    if text.contains(where: { $0 == "\r" || $0 == "\n" }) {
                        reader.report(headerPath, "a header value cannot hold a line break")
                        continue
                    }
                    if let values = allowed.values, !values.contains(text.lowercased()) {
                        reader.report(
                            headerPath, "\"\(text)\" is not one of \(values.sorted().joined(separator: ", "))")
                        continue
                    }
                    headers.append(HTTPHeaderSetting(name: allowed.name, value: text))
                }
            default:
                reader.report(path, "unknown key")
            }
        }
        return headers
    }

    private static func readUsers(_ node: Node, reader: inout ConfigReader) -> [String: String] {
        let section = "basic_auth_users"
        guard let entries = reader.mapping(node, at: section) else { return [:] }
        var users: [String: String] = [:]
        for (user, value) in entries {
            let path = ConfigReader.path(section, user)
            if user.isEmpty || user.contains(":") {
                reader.report(section, "a user name must be non-empty and without \":\"")
                continue
            }
            // The hash is not echoed: a plain password written here by mistake would end up in a log.
            guard case .scalar(let scalar) = value, !ConfigReader.isNull(value), isBcryptHash(scalar.string) else {
                reader.report(
                    path,
                    "expected a bcrypt hash ($2y$, $2b$ or $2a$, 60 characters, e.g. from htpasswd -nBC 10 \"\"), "
                        + "got \(ConfigReader.describe(value, revealing: false))")
                continue
            }
            users[user] = scalar.string
        }
        return users
    }

    /// `$2a$`, `$2b$` or `$2y$`, a two-digit cost from 04 to 31, `$`, then 53 characters of bcrypt's base64.
    static func isBcryptHash(_ text: String) -> Bool {
        let bytes = Array(text.utf8)
        guard bytes.count == 60, bytes[0] == UInt8(ascii: "$"), bytes[1] == UInt8(ascii: "2"),
            [UInt8(ascii: "a"), UInt8(ascii: "b"), UInt8(ascii: "y")].contains(bytes[2]),
            bytes[3] == UInt8(ascii: "$"), bytes[6] == UInt8(ascii: "$"),
            let cost = Int(String(decoding: bytes[4..<6], as: UTF8.self)), (4...31).contains(cost)
        else { return false }
        let alphabet = Set("./ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)
        return bytes[7...].allSatisfy(alphabet.contains)
    }

    private static func absolute(_ name: String, in directory: String) -> String {
        if name.hasPrefix("/") || directory.isEmpty { return name }
        return directory.hasSuffix("/") ? directory + name : directory + "/" + name
    }
}
