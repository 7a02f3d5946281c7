import Dispatch
public import PGConnCore
import PGConnSync
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The exporter's HTTP routes: metrics, health, events, on-demand probes, liveness, readiness, reload and the
/// status page.
///
/// Every answer but the probe's and the reload's is computed from the closures' current snapshots at once.
/// Those two come later (``HTTPReply/deferred(_:)``): a probe is answered by the I/O loop when it finishes, a
/// reload from a dispatch thread, and no HTTP thread waits for either. GET and HEAD are accepted on every route
/// but `/-/reload`, which takes POST only (the server drops the body for HEAD); any other method on a known
/// path is 405 with `Allow`, an unknown path 404. The telemetry path wins over the fixed routes if the two
/// collide.
public struct ExporterRouter: Sendable {
    /// The content type of the Prometheus text exposition format 0.0.4.
    public static let metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

    public let telemetryPath: String
    public let version: String
    private let renderMetrics: @Sendable () -> [UInt8]
    /// Pages rendered off the request path (``ExpositionCache``); `nil` renders every scrape.
    private let exposition: ExpositionCache?
    private let isReady: @Sendable () -> Bool
    private let health: @Sendable () -> HealthSnapshot
    private let events: @Sendable (_ target: String?, _ since: Double?) -> [(target: String, event: TargetEvent)]?
    private let reload: (@Sendable () -> (ok: Bool, message: String))?
    private let probe: ProbeRoute?

    /// - Parameters:
    ///   - telemetryPath: where metrics are served; must start with "/".
    ///   - renderMetrics: the metrics in Prometheus text format 0.0.4.
    ///   - metricsGeneration: the store's ``MetricsStore/generation`` and ``MetricsStore/rareGeneration``, so
    ///     scrapes are served pages rendered off the request path (``ExpositionCache``); `nil`: every scrape
    ///     renders.
    ///   - isReady: true once the config is loaded and every target has been probed once.
    ///   - health: every target's health and the policy, for `/health` (from the store's snapshot).
    ///   - events: the event history of one target (`nil`: unknown name) or all, from a Unix time on.
    ///   - reload: for `POST /-/reload`: reloads the config and says how it went (it may block: it runs on a
    ///     dispatch thread); `nil`: no such route.
    ///   - probe: for `/probe`; `nil`: no such route.
    ///   - version: the exporter's version, shown on the landing page.
    public init(
        telemetryPath: String = "/metrics",
        renderMetrics: @escaping @Sendable () -> [UInt8],
        metricsGeneration: (@Sendable () -> (all: UInt64, rare: UInt64))? = nil,
        isReady: @escaping @Sendable () -> Bool,
        health: @escaping @Sendable () -> HealthSnapshot,
        events: @escaping @Sendable (String?, Double?) -> [(target: String, event: TargetEvent)]? = { _, _ in [] },
        reload: (@Sendable () -> (ok: Bool, message: String))? = nil,
        probe: ProbeRoute? = nil,
        version: String
    ) {
        precondition(telemetryPath.hasPrefix("/"), "telemetry path \"\(telemetryPath)\" must start with \"/\"")
        self.telemetryPath = telemetryPath
        self.renderMetrics = renderMetrics
        self.exposition = metricsGeneration.map { generation in
            ExpositionCache(
                generation: {
                    let (all, rare) = generation()
                    return ExpositionCache.Generation(all: all, rare: rare)
                }, render: renderMetrics)
        }
        self.isReady = isReady
        self.health = health
        self.events = events
        self.reload = reload
        self.probe = probe
        self.version = version
    }

    /// The routes this router serves.
    private enum Route {
        case telemetry, healthy, ready, landing, health, events, reload, probe
        /// `/health/<name>`
        case targetHealth(String)

        var allowedMethods: [String] {
            if case .reload = self { return ["POST"] }
            return ["GET", "HEAD"]
        }
    }

    /// The answer to a request, as ``HTTPServer`` takes it: at once, or later for `/probe` and `/-/reload`.
    public func reply(_ request: HTTPRequest) -> HTTPReply {
        switch route(for: request.path) {
        case .probe? where request.method == "GET" || request.method == "HEAD":
            return probeReply(request)
        case .reload? where request.method == "POST":
            guard let reload else { return .response(.text("Not found: \(request.path)\n", status: 404)) }
            return .deferred { respond in
                DispatchQueue.global().async {
                    let (ok, message) = reload()
                    respond(.text(message, status: ok ? 200 : 500))
                }
            }
        default:
            return .response(handle(request))
        }
    }

    /// The answer to a request, waiting for one that comes later (for tests and callers without a server).
    public func handle(_ request: HTTPRequest) -> HTTPResponse {
        guard let route = route(for: request.path) else {
            return .text("Not found: \(request.path)\n", status: 404)
        }
        guard route.allowedMethods.contains(request.method) else {
            let allowed = route.allowedMethods.joined(separator: ", ")
            var response = HTTPResponse.text(
                "Method not allowed: \(request.method) \(request.path); allowed: \(allowed)\n", status: 405)
            response.headers.append(("Allow", allowed))
            return response
        }
        switch route {
        case .telemetry:
            var headers = [("Content-Type", Self.metricsContentType), ("Vary", "Accept-Encoding")]
            let gzip = Gzip.isAccepted(by: request.header("accept-encoding"))
            if let exposition {
                let (page, gzipped) = exposition.body(gzip: gzip)
                if gzipped { headers.append(("Content-Encoding", "gzip")) }
                return HTTPResponse(status: 200, headers: headers, shared: page)
            }
            var body = renderMetrics()
            if gzip, let compressed = Gzip.compress(body) {
                body = compressed
                headers.append(("Content-Encoding", "gzip"))
            }
            return HTTPResponse(status: 200, headers: headers, body: body)
        case .healthy:
            return .text("Healthy\n")
        case .ready:
            return isReady()
                ? .text("Ready\n")
                : .text("Not ready: waiting for the config and a first probe of every target\n", status: 503)
        case .landing:
            return .html(statusPage())
        case .health:
            return healthResponse(request, target: nil)
        case .targetHealth(let name):
            return healthResponse(request, target: name)
        case .events:
            return eventsResponse(request)
        case .reload, .probe:
            return Self.wait(for: reply(request))
        }
    }

    /// Waits for a deferred answer on this thread.
    private static func wait(for reply: HTTPReply) -> HTTPResponse {
        switch reply {
        case .response(let response):
            return response
        case .deferred(let start):
            let box = ResponseBox()
            start { box.set($0) }
            return box.wait()
        }
    }

    /// `/probe?target=<name>` or `/probe?target=<host[:port]>&module=<name>` (docs/probe.md): checked here
    /// (400, 403, 404 without connecting), probed on the I/O loop, answered when it finishes.
    private func probeReply(_ request: HTTPRequest) -> HTTPReply {
        guard let probe else { return .response(.text("Not found: \(request.path)\n", status: 404)) }
        let config = probe.config()
        let plan: ProbePlan
        switch ProbePlan.make(
            query: request.query, scrapeTimeoutHeader: request.header("x-prometheus-scrape-timeout-seconds"),
            config: config, offset: probe.timeoutOffset)
        {
        case .success(let made): plan = made
        case .failure(let refusal): return .response(refusal.response)
        }
        let subject: ProbeSubject
        switch plan.subject {
        case .configured(let name):
            subject = .configured(name)
        case .discovered(let module, let address):
            subject = .discovered(module.targetConfig(for: address))
        }
        return .deferred { respond in
            let started = probe.start(subject, plan.timeout) { result in
                if plan.debug {
                    respond(.text(result.debugText(describing: plan.description)))
                } else {
                    respond(
                        HTTPResponse(
                            status: 200, headers: [("Content-Type", Self.metricsContentType)], body: result.exposition()
                        ))
                }
            }
            if !started {
                respond(
                    .text(
                        "Too many requests: --probe.max-concurrent probes are in progress; try again later\n",
                        status: 429))
            }
        }
    }

    private func route(for path: String) -> Route? {
        switch path {
        case telemetryPath: .telemetry
        case "/-/healthy": .healthy
        case "/-/ready": .ready
        case "/": .landing
        case "/health", "/health/": .health
        case "/api/v1/events": .events
        case "/-/reload": .reload
        case "/probe": .probe
        case _ where path.hasPrefix("/health/"): .targetHealth(String(path.dropFirst("/health/".count)))
        default: nil
        }
    }

    /// The status page from the health snapshot and the event history (``StatusPage``).
    private func statusPage() -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        let now = Double(spec.tv_sec) + Double(spec.tv_nsec) / 1e9
        let byTarget = Dictionary(grouping: events(nil, nil) ?? [], by: \.target)
        let rows = health().targets.map { target in
            StatusPage.Row(health: target, events: byTarget[target.name]?.map(\.event) ?? [])
        }
        return StatusPage.render(rows: rows, version: version, telemetryPath: telemetryPath, now: now)
    }

    /// `/api/v1/events[?target=<name>][&since=<RFC 3339>]`: JSON, newest last; 404 for an unknown target, 400 for
    /// a `since` that is not an RFC 3339 time.
    private func eventsResponse(_ request: HTTPRequest) -> HTTPResponse {
        var since: Double?
        if let text = request.query["since"] {
            guard let parsed = RFC3339.parse(text) else {
                return .text(
                    "Bad request: since must be an RFC 3339 time such as 2026-12-02T13:00:00Z (got \"\(text)\")\n",
                    status: 400)
            }
            since = parsed
        }
        let target = request.query["target"].flatMap { $0.isEmpty ? nil : $0 }
        guard let found = events(target, since) else { return .text("Unknown target: \(target ?? "")\n", status: 404) }
        return HTTPResponse(
            status: 200, headers: [("Content-Type", "application/json"), ("Cache-Control", "no-store")],
            body: Array(EventsJSON.render(found).utf8))
    }

    /// `/health` (the policy over the counted targets) or `/health/<name>` (that target; with `?role=`, up and
    /// in that role). 200 or 503; text, or JSON for `Accept: application/json` or `?format=json`.
    private func healthResponse(_ request: HTTPRequest, target name: String?) -> HTTPResponse {
        let wantsJSON =
            request.query["format"] == "json" || (request.header("accept")?.contains("application/json") ?? false)
        if let format = request.query["format"], format != "json", format != "text" {
            return .text("Bad request: format must be text or json (got \"\(format)\")\n", status: 400)
        }
        let snapshot = health()
        var targets = snapshot.targets
        let healthy: Bool
        if let name {
            guard let target = targets.first(where: { $0.name == name }) else {
                return .text("Unknown target: \(name)\n", status: 404)
            }
            if let role = request.query["role"] {
                guard role == "primary" || role == "standby" else {
                    return .text("Bad request: role must be primary or standby (got \"\(role)\")\n", status: 400)
                }
                healthy = target.isUp(inRole: role)
            } else {
                healthy = target.healthy
            }
            targets = [target]
        } else {
            healthy = HealthReport.holds(targets, policy: snapshot.policy)
        }
        let status = healthy ? 200 : 503
        guard wantsJSON else { return .text(HealthReport.text(targets), status: status) }
        var response = HTTPResponse(
            status: status, headers: [("Content-Type", "application/json")],
            body: Array(HealthReport.json(targets, policy: snapshot.policy, healthy: healthy).utf8))
        response.headers.append(("Cache-Control", "no-store"))
        return response
    }

    /// Escapes text for HTML element content and double- or single-quoted attribute values.
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count)
        for character in text {
            switch character {
            case "&": escaped += "&amp;"
            case "<": escaped += "&lt;"
            case ">": escaped += "&gt;"
            case "\"": escaped += "&quot;"
            case "'": escaped += "&#39;"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}

/// One response handed over between threads, for ``ExporterRouter/handle(_:)``.
private final class ResponseBox: Sendable {
    private let response = Lock<HTTPResponse?>(nil)
    private let ready = DispatchSemaphore(value: 0)

    func set(_ value: HTTPResponse) {
        let first = response.withLock { current in
            guard current == nil else { return false }
            current = value
            return true
        }
        if first { ready.signal() }
    }

    func wait() -> HTTPResponse {
        ready.wait()
        return response.withLock { $0! }
    }
}
