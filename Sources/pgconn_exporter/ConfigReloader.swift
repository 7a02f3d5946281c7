import CLinux
import Foundation
import Logging
import PGConnCore
import PGConnPostgres
import PGConnSync
import Synchronization

/// Re-reads and validates the config file on SIGHUP and `POST /-/reload`, and hands a valid one to the monitor.
///
/// On failure the config in force stays: the errors are logged and returned (for the HTTP answer), and
/// `pgconn_exporter_config_last_reload_successful` reads 0 until a reload succeeds. One reload at a time.
final class ConfigReloader: Sendable {
    enum Outcome: Sendable {
        case reloaded(ReloadSummary)
        case failed([String])
    }

    private let file: String
    /// This replica's share of the targets (`--config.shard`); `nil`: all of them.
    private let shard: ConfigShard?
    private let monitor: Monitor
    private let metrics: MetricsStore
    private let logger: Logger
    /// The config in force, read by the health routes for their policy.
    private let current: Lock<ValidatedConfig>
    /// One reload at a time; it counts them. (A lock around `Void` would do, but ThreadSanitizer reports the
    /// empty value's accesses under it as races.)
    private let serial = Lock(0)
    /// The file's content (hashed, in-process) when it was last loaded or tried, for ``watch(every:)``.
    private let lastSeen = Lock<Int?>(nil)

    init(
        file: String, initial: ValidatedConfig, shard: ConfigShard?, monitor: Monitor, metrics: MetricsStore,
        logger: Logger
    ) {
        self.file = file
        self.shard = shard
        self.current = Lock(initial)
        self.monitor = monitor
        self.metrics = metrics
        self.logger = logger
    }

    var config: ValidatedConfig { current.withLock { $0 } }

    /// `--config.auto-reload-interval`: reads the file every `interval` (on a thread of its own, never the I/O
    /// thread, for the life of the process) and reloads when its content changed since it was last loaded or tried, so a bad edit is
    /// reported once, not every interval. An unreadable file is tried again at the next tick.
    func watch(every interval: Duration) {
        lastSeen.withLock { $0 = try? ConfigLoader.readFile(file).get().hashValue }
        let thread = Thread { [self] in
            pgconn_name_thread("pgconn-watch")
            while true {
                Thread.sleep(forTimeInterval: interval.seconds)
                guard case .success(let bytes) = ConfigLoader.readFile(file) else { continue }
                let changed = lastSeen.withLock { seen in
                    defer { seen = bytes.hashValue }
                    return seen != bytes.hashValue
                }
                if changed { _ = reload(trigger: "auto") }
            }
        }
        thread.name = "pgconn-watch"
        thread.start()
    }

    /// Reloads now, on the calling thread (a file read and a validation, then a short wait for the loop).
    func reload(trigger: String) -> Outcome {
        serial.withLock { reloads in
            reloads += 1
            let outcome: Outcome
            let read = ConfigLoader.readFile(file)
            if let bytes = try? read.get() { lastSeen.withLock { $0 = bytes.hashValue } }
            switch ConfigLoader.load(read: read, path: file, parseDSN: DSNParser.parse) {
            case .failure(let error):
                outcome = .failed(error.messages.map { "\(file): \($0)" })
            case .success(let loaded):
                let config = shard.map { loaded.sharded($0) } ?? loaded
                if let summary = monitor.reload(config) {
                    current.withLock { $0 = config }
                    metrics.setDetail(config.metrics)
                    outcome = .reloaded(summary)
                } else {
                    outcome = .failed(["\(file): the monitor did not take the new config in time; the old one stays"])
                }
            }
            switch outcome {
            case .reloaded(let summary):
                metrics.recordReload(successful: true, wallClock: Date().timeIntervalSince1970)
                logger.info(
                    "configuration reloaded",
                    metadata: [
                        "trigger": "\(trigger)", "added": "\(summary.added.count)",
                        "removed": "\(summary.removed.count)",
                        "reconfigured": "\(summary.reconfigured.count)", "reconnected": "\(summary.reconnected.count)",
                        "unchanged": "\(summary.unchanged.count)",
                    ])
            case .failed(let errors):
                metrics.recordReload(successful: false, wallClock: Date().timeIntervalSince1970)
                for error in errors {
                    logger.error(
                        "configuration reload failed; the old configuration stays",
                        metadata: [
                            "trigger": "\(trigger)", "error": "\(error)",
                        ])
                }
            }
            return outcome
        }
    }
}
