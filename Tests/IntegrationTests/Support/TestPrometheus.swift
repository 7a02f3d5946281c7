import Foundation

/// The repository's root directory (for the dashboards and rule files the tests check).
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().deletingLastPathComponent()

/// A throwaway Prometheus (the Debian package) for one test: its own temp dir, config, rule files, TSDB and free
/// port on 127.0.0.1.
///
/// It runs as a ``ServerProcess`` (as the `postgres` OS user when the tests run as root), behind a shell that
/// writes its PID before `exec`, so the same watchdog and cleanup apply. Queries go through its HTTP API.
final class TestPrometheus: TestServer, Sendable {
    static let executable = "/usr/bin/prometheus"
    static let promtool = "/usr/bin/promtool"
    static let startTimeout: Duration = .seconds(60)

    let port: Int
    let rootDir: URL
    private let process: ServerProcess

    private init(port: Int, rootDir: URL) {
        self.port = port
        self.rootDir = rootDir
        let pidFile = rootDir.appendingPathComponent("prometheus.pid")
        let arguments = [
            "-c", #"echo $$ > "$0"; exec "$@""#, pidFile.path, Self.executable,
            "--config.file=\(rootDir.appendingPathComponent("prometheus.yml").path)",
            "--storage.tsdb.path=\(rootDir.appendingPathComponent("data").path)",
            "--web.listen-address=127.0.0.1:\(port)", "--storage.tsdb.retention.time=1h", "--log.level=warn",
        ]
        process = ServerProcess(
            name: "prometheus", port: port, rootDir: rootDir,
            logFile: rootDir.appendingPathComponent("prometheus.log"), pidFile: pidFile, executable: "/bin/sh",
            arguments: arguments, immediateStop: SIGTERM)
    }

    /// Writes `files` (the config as `prometheus.yml`, rule files by name) into a fresh temp dir and starts
    /// Prometheus on a free port. `config` gets the port, for configs that scrape Prometheus itself.
    static func start(config: (_ port: Int) -> String, files: [String: String] = [:]) throws -> TestPrometheus {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw TestPostgresError("no \(executable) (run `make deps`: the Debian package prometheus)")
        }
        return try ServerProcess.startOnFreePort(tempDirPrefix: "pgconn-prometheus") { port, rootDir in
            let prometheus = TestPrometheus(port: port, rootDir: rootDir)
            for (name, text) in files.merging(["prometheus.yml": config(port)], uniquingKeysWith: { $1 }) {
                try Data(text.utf8).write(to: rootDir.appendingPathComponent(name))
            }
            let data = rootDir.appendingPathComponent("data")
            try FileManager.default.createDirectory(at: data, withIntermediateDirectories: true)
            _ = FileManager.default.createFile(atPath: rootDir.appendingPathComponent("prometheus.log").path, contents: nil)
            try ServerUser.handOver(rootDir)
            try ServerUser.handOver(data)
            try ServerUser.handOver(rootDir.appendingPathComponent("prometheus.log"))
            return prometheus
        }
    }

    func start() throws {
        try process.start(timeout: Self.startTimeout) {
            (try? httpGet(port: port, path: "/-/ready", timeout: .seconds(1)).status) == 200
        }
    }

    func cleanup() { process.cleanup() }

    func log() -> String { process.log() }

    // MARK: The HTTP API

    /// `GET /api/v1/<path>?<query>`; the `data` member of a successful answer, or throws with Prometheus' error.
    func api(_ path: String, _ parameters: [(String, String)] = []) throws -> Any {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        let query = parameters.map { "\($0)=\($1.addingPercentEncoding(withAllowedCharacters: allowed) ?? "")" }
        let target = "/api/v1/\(path)" + (query.isEmpty ? "" : "?" + query.joined(separator: "&"))
        let answer = try httpGet(port: port, path: target, timeout: .seconds(10))
        guard let object = try JSONSerialization.jsonObject(with: Data(answer.body.utf8)) as? [String: Any] else {
            throw TestPostgresError("\(target): not a JSON object: \(answer.body.prefix(300))")
        }
        guard answer.status == 200, object["status"] as? String == "success", let data = object["data"] else {
            throw TestPostgresError("\(target): \(answer.status) \(object["errorType"] ?? "") \(object["error"] ?? "")")
        }
        return data
    }

    /// An instant query's result: each series' labels and value.
    func query(_ expression: String) throws -> [(labels: [String: String], value: Double)] {
        guard let data = try api("query", [("query", expression)]) as? [String: Any] else { return [] }
        switch data["resultType"] as? String {
        case "vector":
            return (data["result"] as? [[String: Any]] ?? []).map { sample in
                let pair = sample["value"] as? [Any] ?? []
                let value = Double(pair.count == 2 ? pair[1] as? String ?? "" : "") ?? .nan
                return (sample["metric"] as? [String: String] ?? [:], value)
            }
        case "scalar":
            let pair = data["result"] as? [Any] ?? []
            return [([:], Double(pair.count == 2 ? pair[1] as? String ?? "" : "") ?? .nan)]
        default:
            return []
        }
    }

    /// The alerts Prometheus has now: name, state (`pending` or `firing`) and labels.
    func alerts() throws -> [(name: String, state: String, labels: [String: String])] {
        guard let data = try api("alerts") as? [String: Any] else { return [] }
        return (data["alerts"] as? [[String: Any]] ?? []).map { alert in
            let labels = alert["labels"] as? [String: String] ?? [:]
            return (labels["alertname"] ?? "", alert["state"] as? String ?? "", labels)
        }
    }

    /// Whether every scrape target reports `up` to Prometheus.
    func targetsUp() throws -> Bool {
        guard let data = try api("targets") as? [String: Any],
            let active = data["activeTargets"] as? [[String: Any]], !active.isEmpty
        else { return false }
        return active.allSatisfy { $0["health"] as? String == "up" }
    }
}
