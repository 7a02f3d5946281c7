import ArgumentParser
import Dispatch
import Foundation
import Logging
import PGConnCore
import PGConnHTTP
import PGConnLog
import PGConnPostgres

/// The command line: flags named like the Go exporters', then the wiring of config, monitor and HTTP.
@main
struct PGConnExporter: ParsableCommand {
    static let version = "0.1.0"

    static let configuration = CommandConfiguration(
        commandName: "pgconn_exporter",
        abstract:
            "Watches PostgreSQL connections (persistent sessions and fresh logins) and exports Prometheus metrics.",
        version: version)

    @Option(name: .customLong("config.file"), help: "Path to the YAML configuration.")
    var configFile = "config/pgconn_exporter.yml"

    @Option(name: .customLong("web.listen-address"), help: "Address to listen on: :9818, 127.0.0.1:9818, [::1]:9818.")
    var listenAddress = ":9818"

    @Option(name: .customLong("web.telemetry-path"), help: "Path under which to expose metrics.")
    var telemetryPath = "/metrics"

    @Option(
        name: .customLong("web.config.file"),
        help: "Path to a web config (exporter-toolkit format) for TLS, basic auth and headers; empty: plain HTTP.")
    var webConfigFile = ""

    @Option(
        name: .customLong("web.auth-exempt-path"),
        help: "A path answered without basic auth, e.g. /-/healthy for a load balancer (repeatable).")
    var authExemptPaths: [String] = []

    @Option(name: .customLong("log.level"), help: "Only log messages at or above this level: debug, info, warn, error.")
    var logLevel = "info"

    @Option(name: .customLong("log.format"), help: "Log line format: logfmt or json.")
    var logFormat = "logfmt"

    @Option(
        name: .customLong("config.auto-reload-interval"),
        help: "Reload the config file when its content changes, checked this often (e.g. 30s); 0s: off.")
    var autoReloadInterval = "0s"

    @Option(
        name: .customLong("config.shard"),
        help: "Watch only this replica's share of the targets: <index>/<count>, 0-based (e.g. 1/3); empty: all.")
    var configShard = ""

    @Option(
        name: .customLong("probe.timeout-offset"),
        help: "Taken off X-Prometheus-Scrape-Timeout-Seconds for a /probe's budget, so it answers in time (e.g. 500ms)."
    )
    var probeTimeoutOffset = "500ms"

    @Option(
        name: .customLong("probe.max-concurrent"),
        help: "How many /probe requests may be in progress at once; more get 429.")
    var probeMaxConcurrent = 32

    @Flag(
        name: .customLong("config.check"),
        help: "Validate the configuration, print the result and exit (0 valid, 1 not).")
    var configCheck = false

    /// Ignores SIGPIPE before anything is written (flag errors included), then runs the command: a write to a
    /// stderr or stdout whose reader went away must fail with EPIPE, not kill the process.
    static func main() {
        signal(SIGPIPE, SIG_IGN)
        main(nil)
    }

    func validate() throws {
        guard StructuredLogHandler.level(named: logLevel) != nil else {
            throw ValidationError("--log.level: must be one of debug, info, warn, error (got \"\(logLevel)\")")
        }
        guard LogFormat(rawValue: logFormat) != nil else {
            throw ValidationError("--log.format: must be logfmt or json (got \"\(logFormat)\")")
        }
        guard let interval = try? Duration(prometheus: autoReloadInterval),
            interval == .zero || interval >= .milliseconds(100)
        else {
            throw ValidationError(
                "--config.auto-reload-interval: must be 0s (off) or a duration of at least 100ms (got \"\(autoReloadInterval)\")"
            )
        }
        guard (try? Duration(prometheus: probeTimeoutOffset)) != nil else {
            throw ValidationError(
                "--probe.timeout-offset: must be a duration such as 500ms or 0s (got \"\(probeTimeoutOffset)\")")
        }
        guard configShard.isEmpty || ConfigShard(parsing: configShard) != nil else {
            throw ValidationError(
                "--config.shard: must be <index>/<count> with 0 <= index < count, such as 0/2 (got \"\(configShard)\")")
        }
        guard (1...10_000).contains(probeMaxConcurrent) else {
            throw ValidationError("--probe.max-concurrent: must be between 1 and 10000 (got \(probeMaxConcurrent))")
        }
        for path in authExemptPaths where !path.hasPrefix("/") {
            throw ValidationError("--web.auth-exempt-path: must start with \"/\" (got \"\(path)\")")
        }
        guard telemetryPath.hasPrefix("/"), telemetryPath.count > 1 else {
            throw ValidationError(
                "--web.telemetry-path: must start with \"/\" and name a path (got \"\(telemetryPath)\")")
        }
    }

    func run() throws {
        let level = StructuredLogHandler.level(named: logLevel) ?? .info
        let format = LogFormat(rawValue: logFormat) ?? .logfmt
        let metrics = MetricsStore(
            buildInfo: BuildInfo(
                version: Self.version, revision: Self.revision, libpqVersion: LibPQ.version,
                microhttpdVersion: HTTPServer.libraryVersion))
        let writer = LogWriter { dropped in metrics.recordLogLinesDropped(dropped) }
        // The final lines ("stopped") reach a healthy stderr; a stuck one cannot hold the exit for more than 1 s.
        defer { writer.close(timeout: .seconds(1)) }
        LoggingSystem.bootstrap { label in
            StructuredLogHandler(label: label, format: format, level: level, writer: writer)
        }
        let logger = Logger(label: "pgconn_exporter")

        let shard = ConfigShard(parsing: configShard)
        let config: ValidatedConfig
        var configured = 0
        switch ConfigLoader.load(file: configFile, parseDSN: DSNParser.parse) {
        case .success(let loaded):
            config = shard.map { loaded.sharded($0) } ?? loaded
            configured = loaded.targets.count
        case .failure(let error):
            for message in error.messages { Self.printError("\(configFile): \(message)") }
            throw ExitCode.failure
        }
        var web = WebSetup.plain
        if !webConfigFile.isEmpty {
            switch WebSetup.load(path: webConfigFile) {
            case .success(let setup): web = setup
            case .failure(let error):
                for message in error.messages { Self.printError("\(webConfigFile): \(message)") }
                throw ExitCode.failure
            }
        }
        if configCheck {
            var line =
                "\(configFile): valid, \(config.targets.count) target(s): \(config.targets.map(\.name).joined(separator: ", "))"
            if let shard { line += " (shard \(shard): \(config.targets.count) of \(configured))" }
            if !config.modules.isEmpty {
                line += "; \(config.modules.count) module(s): \(config.modules.map(\.name).joined(separator: ", "))"
            }
            print(line)
            if !webConfigFile.isEmpty {
                print(
                    "\(webConfigFile): valid, \(web.tls == nil ? "plain HTTP" : "HTTPS"), \(web.config.basicAuthUsers.count) basic auth user(s), \(web.config.headers.count) header(s)"
                )
            }
            return
        }

        Self.raiseOpenFileLimit(logger: logger)
        metrics.recordReload(successful: true, wallClock: Date().timeIntervalSince1970)
        metrics.setDetail(config.metrics)

        let monitor: Monitor
        do {
            monitor = try Monitor(
                config: config, metrics: metrics, logger: logger, maxConcurrentProbes: probeMaxConcurrent)
        } catch {
            Self.printError("cannot start the monitor: \(error)")
            throw ExitCode.failure
        }
        let reloader = ConfigReloader(
            file: configFile, initial: config, shard: shard, monitor: monitor, metrics: metrics, logger: logger)
        let router = ExporterRouter(
            telemetryPath: telemetryPath,
            renderMetrics: {
                metrics.render(
                    wallClock: Date().timeIntervalSince1970, now: MonotonicInstant.now(),
                    process: ProcessStats.readCurrent(),
                    loopOverdue: monitor.overdue)
            },
            metricsGeneration: { (metrics.generation, metrics.rareGeneration) },
            isReady: { monitor.isReady },
            health: {
                let policy = reloader.config.health
                return HealthSnapshot(
                    targets: HealthReport.targets(metrics.snapshot(), policy: policy, now: MonotonicInstant.now()),
                    policy: policy)
            },
            events: { target, since in metrics.events(target: target, since: since) },
            reload: {
                switch reloader.reload(trigger: "http") {
                case .reloaded(let summary): (true, "Reloaded: \(summary.description)\n")
                case .failed(let errors): (false, errors.joined(separator: "\n") + "\n")
                }
            },
            probe: ProbeRoute(
                config: { reloader.config },
                start: { subject, timeout, done in
                    monitor.probe(ProbeOrder(subject, timeout: timeout), completion: done)
                },
                timeoutOffset: (try? Duration(prometheus: probeTimeoutOffset)) ?? .milliseconds(500)),
            version: Self.version)
        let gate = WebGate(
            WebGate.Settings(
                users: web.config.basicAuthUsers, headers: web.config.headers, exemptPaths: Set(authExemptPaths)))
        let server = HTTPServer(listenAddress: listenAddress, tls: web.tls, reply: gate.wrap(router.reply))
        do {
            try server.start()
        } catch {
            Self.printError("--web.listen-address: \(error)")
            throw ExitCode.failure
        }
        monitor.start()
        logger.info(
            "pgconn_exporter started",
            metadata: [
                "version": "\(Self.version)", "listen_address": "\(listenAddress)",
                "telemetry_path": "\(telemetryPath)", "targets": "\(config.targets.count)",
                "config_file": "\(configFile)",
                "shard": "\(shard.map { "\($0) (\(configured) targets in the file)" } ?? "all")",
            ])
        if !webConfigFile.isEmpty {
            var metadata: Logger.Metadata = [
                "file": "\(webConfigFile)", "tls": "\(web.tls != nil)", "users": "\(web.config.basicAuthUsers.count)",
                "auth_exempt_paths": "\(authExemptPaths.joined(separator: ","))",
            ]
            if let tls = web.tls {
                metadata["client_auth"] = "\(web.config.tls?.clientAuth.rawValue ?? "")"
                metadata["certificate_sha256"] = "\(tls.fingerprint)"
                metadata["certificate_not_after"] = "\(WebReloader.timestamp(tls.notAfter))"
            }
            logger.info("web config loaded", metadata: metadata)
        }
        if let limits = server.limits {
            logger.info(
                "HTTP connection limits",
                metadata: [
                    "total": "\(limits.total)", "per_address": "\(limits.perAddress)",
                    "idle_timeout": "\(limits.idleTimeout.prometheusString)",
                    "request_deadline": "\(limits.requestDeadline.prometheusString)",
                ])
        }

        if let interval = try? Duration(prometheus: autoReloadInterval), interval > .zero {
            reloader.watch(every: interval)
        }
        let webReloader =
            webConfigFile.isEmpty
            ? nil
            : WebReloader(
                path: webConfigFile, initial: web, server: server, gate: gate, exemptPaths: Set(authExemptPaths),
                logger: logger)
        webReloader?.watch()
        let signal = Self.waitForTermination {
            _ = reloader.reload(trigger: "SIGHUP")
            webReloader?.reload(trigger: "SIGHUP")
        }
        logger.info("shutting down", metadata: ["signal": "\(signal)"])
        server.stop()
        monitor.stop()
        logger.info("stopped")
    }

    /// Blocks until SIGTERM or SIGINT and returns its name; SIGHUP runs `reload` (on a dispatch queue).
    static func waitForTermination(reload: @escaping @Sendable () -> Void) -> String {
        let done = DispatchSemaphore(value: 0)
        let received = LockedName()
        var sources: [any DispatchSourceSignal] = []
        for (number, name) in [(SIGTERM, "SIGTERM"), (SIGINT, "SIGINT"), (SIGHUP, "SIGHUP")] {
            Foundation.signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                if number == SIGHUP {
                    reload()
                    return
                }
                received.set(name)
                done.signal()
            }
            source.resume()
            sources.append(source)
        }
        done.wait()
        for source in sources { source.cancel() }
        return received.get()
    }

    /// Raises the soft limit on open files to the hard limit, as Go programs do: each target holds up to two
    /// connections, and the usual soft limit of 1024 would cap a large config at about 500 targets.
    static func raiseOpenFileLimit(logger: Logger) {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        let soft = limit.rlim_cur
        limit.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) != 0 {
            logger.warning("cannot raise the open file limit", metadata: ["soft": "\(soft)", "error": "\(errno)"])
        }
    }

    /// Writes an error to stderr at once (before the monitor starts), with write(2): it never traps on a broken
    /// stderr, unlike `FileHandle.write`.
    static func printError(_ message: String) {
        LogWriter.writeAll(Array("pgconn_exporter: error: \(message)\n".utf8), to: STDERR_FILENO)
    }

    /// The git revision. SwiftPM has no build-time stamping without a plugin, so this stays "unknown" until
    /// release builds stamp it.
    static let revision = "unknown"
}

/// The name of the signal that ended the process, set on a dispatch queue and read on the main thread.
final class LockedName: @unchecked Sendable {
    // @unchecked: every access goes through `lock`.
    private let lock = NSLock()
    private var name = ""

    func set(_ value: String) { lock.withLock { name = value } }
    func get() -> String { lock.withLock { name } }
}
