import CLinux
import Foundation
import Logging
import PGConnCore
import PGConnHTTP
import PGConnSync
import Synchronization

/// `--web.config.file` read in full: the web config and the TLS credentials built from the files it names.
struct WebSetup: Sendable {
    var config: WebConfig
    var tls: TLSCredentials?

    static let plain = WebSetup(config: .plain, tls: nil)

    /// Reads the web config and its certificate, key and client CA files; every problem, each naming the file
    /// or key. Blocks on file reads: called at startup and on the reloader's own thread, never on the loop.
    static func load(path: String) -> Result<WebSetup, ConfigError> {
        let directory = (path as NSString).deletingLastPathComponent
        let config: WebConfig
        switch ConfigLoader.readFile(path) {
        case .failure(let problem):
            return .failure(ConfigError(messages: ["cannot read web config file \"\(path)\": \(problem.message)"]))
        case .success(let bytes):
            guard let yaml = String(validating: bytes, as: UTF8.self) else {
                return .failure(ConfigError(messages: ["cannot read web config file \"\(path)\": not valid UTF-8"]))
            }
            switch WebConfigLoader.load(yaml: yaml, directory: directory.isEmpty ? "." : directory) {
            case .failure(let error): return .failure(error)
            case .success(let loaded): config = loaded
            }
        }
        guard let settings = config.tls else { return .success(WebSetup(config: config, tls: nil)) }
        var messages: [String] = []
        func pem(_ source: TLSServerSettings.Source?, _ key: String) -> [UInt8]? {
            switch source {
            case nil: return nil
            case .inline(let text): return Array(text.utf8)
            case .file(let file):
                switch ConfigLoader.readFile(file) {
                case .success(let bytes): return bytes
                case .failure(let problem):
                    messages.append("tls_server_config.\(key)_file: cannot read \"\(file)\": \(problem.message)")
                    return nil
                }
            }
        }
        let certificate = pem(settings.certificate, "cert")
        let key = pem(settings.key, "key")
        let clientCA = pem(settings.clientCA, "client_ca")
        guard messages.isEmpty, let certificate, let key else { return .failure(ConfigError(messages: messages)) }
        do {
            let credentials = try TLSCredentials(
                certificate: certificate, key: key, clientCA: clientCA, settings: settings)
            return .success(WebSetup(config: config, tls: credentials))
        } catch {
            return .failure(ConfigError(messages: ["tls_server_config: \(error.description)"]))
        }
    }

    /// The files whose change means a reload: the web config itself and the PEM files it names.
    static func watchedFiles(path: String, config: WebConfig) -> [String] {
        [path] + (config.tls?.files ?? [])
    }
}

/// Applies `--web.config.file` again on SIGHUP and when the file or a certificate, key or CA file it names
/// changes (checked every ``checkInterval`` on a thread of its own), so a rotated certificate or a new user
/// needs no restart. A reload that fails keeps what is in force and logs why; switching between HTTP and
/// HTTPS needs a restart (libmicrohttpd fixes it when the daemon starts), so such a change is refused.
final class WebReloader: Sendable {
    static let checkInterval = Duration.seconds(5)

    private let path: String
    private let server: HTTPServer
    private let gate: WebGate
    private let exemptPaths: Set<String>
    private let logger: Logger
    /// One reload at a time; it counts them. (A lock around `Void` would do, but ThreadSanitizer reports the
    /// empty value's accesses under it as races.)
    private let serial = Lock(0)
    /// The watched files' content hashes when last loaded or tried (so a bad edit is reported once).
    private let lastSeen = Lock<[String: Int?]>([:])
    private let watchedFiles: Lock<[String]>

    init(path: String, initial: WebSetup, server: HTTPServer, gate: WebGate, exemptPaths: Set<String>, logger: Logger) {
        self.path = path
        self.server = server
        self.gate = gate
        self.exemptPaths = exemptPaths
        self.logger = logger
        let files = WebSetup.watchedFiles(path: path, config: initial.config)
        self.watchedFiles = Lock(files)
        lastSeen.withLock { $0 = Self.fingerprints(files) }
    }

    /// Reloads now, on the calling thread; true when the new settings are in force.
    @discardableResult
    func reload(trigger: String) -> Bool {
        serial.withLock { reloads in
            reloads += 1
            let result = WebSetup.load(path: path)
            if case .success(let setup) = result {
                watchedFiles.withLock { $0 = WebSetup.watchedFiles(path: path, config: setup.config) }
            }
            let files = watchedFiles.withLock { $0 }
            lastSeen.withLock { $0 = Self.fingerprints(files) }
            switch result {
            case .failure(let error):
                logger.error(
                    "web config reload failed; the web config in force stays",
                    metadata: [
                        "trigger": "\(trigger)", "file": "\(path)",
                        "errors": "\(error.messages.joined(separator: "; "))",
                    ])
                return false
            case .success(let setup):
                if (setup.tls != nil) != server.servesTLS {
                    logger.error(
                        "web config reload refused: switching between HTTP and HTTPS needs a restart",
                        metadata: ["trigger": "\(trigger)", "file": "\(path)"])
                    return false
                }
                if let tls = setup.tls { server.replaceTLS(tls) }
                gate.update(
                    WebGate.Settings(
                        users: setup.config.basicAuthUsers, headers: setup.config.headers, exemptPaths: exemptPaths))
                var metadata: Logger.Metadata = [
                    "trigger": "\(trigger)", "file": "\(path)", "users": "\(setup.config.basicAuthUsers.count)",
                ]
                if let tls = setup.tls {
                    metadata["certificate_sha256"] = "\(tls.fingerprint)"
                    metadata["certificate_not_after"] = "\(Self.timestamp(tls.notAfter))"
                }
                logger.info("web config reloaded", metadata: metadata)
                return true
            }
        }
    }

    /// Checks the watched files every ``checkInterval`` for the life of the process, on a thread of its own.
    func watch() {
        let thread = Thread { [self] in
            pgconn_name_thread("pgconn-web-watch")
            while true {
                Thread.sleep(forTimeInterval: Self.checkInterval.seconds)
                let files = watchedFiles.withLock { $0 }
                let now = Self.fingerprints(files)
                let changed = lastSeen.withLock { $0 != now }
                if changed { reload(trigger: "file change") }
            }
        }
        thread.name = "pgconn-web-watch"
        thread.start()
    }

    /// Each file's content hash (`nil` when it cannot be read): a rewrite that keeps the size and mtime counts.
    private static func fingerprints(_ files: [String]) -> [String: Int?] {
        Dictionary(files.map { ($0, try? ConfigLoader.readFile($0).get().hashValue) }, uniquingKeysWith: { a, _ in a })
    }

    static func timestamp(_ seconds: Int64) -> String {
        let formatter = ISO8601DateFormatter()
        return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(seconds)))
    }
}
