/// The exporter's HTTP routes: metrics, liveness, readiness and the landing page.
///
/// Every answer is computed from the closures' current snapshots; none of them may block on the probe
/// loop. GET and HEAD are accepted on every route (the server drops the body for HEAD); any other method
/// on a known path is 405 with `Allow`, an unknown path 404. The telemetry path wins over the fixed
/// routes if the two collide.
public struct ExporterRouter: Sendable {
    /// The content type of the Prometheus text exposition format 0.0.4.
    public static let metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

    public let telemetryPath: String
    public let version: String
    private let renderMetrics: @Sendable () -> [UInt8]
    private let isReady: @Sendable () -> Bool
    private let landingTargets: @Sendable () -> [LandingTarget]

    /// - Parameters:
    ///   - telemetryPath: where metrics are served; must start with "/".
    ///   - renderMetrics: the metrics in Prometheus text format 0.0.4.
    ///   - isReady: true once the config is loaded and every target has been probed once.
    ///   - landingTargets: the rows of the landing page's target table, in display order.
    ///   - version: the exporter's version, shown on the landing page.
    public init(
        telemetryPath: String = "/metrics",
        renderMetrics: @escaping @Sendable () -> [UInt8],
        isReady: @escaping @Sendable () -> Bool,
        landingTargets: @escaping @Sendable () -> [LandingTarget],
        version: String
    ) {
        precondition(telemetryPath.hasPrefix("/"), "telemetry path \"\(telemetryPath)\" must start with \"/\"")
        self.telemetryPath = telemetryPath
        self.renderMetrics = renderMetrics
        self.isReady = isReady
        self.landingTargets = landingTargets
        self.version = version
    }

    /// The routes this router serves. Later routes (/health, /probe, POST /-/reload) add a case each.
    private enum Route {
        case telemetry, healthy, ready, landing

        var allowedMethods: [String] { ["GET", "HEAD"] }
    }

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
            var body = renderMetrics()
            if Gzip.isAccepted(by: request.header("accept-encoding")), let compressed = Gzip.compress(body) {
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
            return .html(landingPage(targets: landingTargets()))
        }
    }

    private func route(for path: String) -> Route? {
        switch path {
        case telemetryPath: .telemetry
        case "/-/healthy": .healthy
        case "/-/ready": .ready
        case "/": .landing
        default: nil
        }
    }

    private func landingPage(targets: [LandingTarget]) -> String {
        let rows =
            targets.isEmpty
            ? "<tr><td colspan=\"3\">No targets configured.</td></tr>\n"
            : targets.map { target in
                "<tr><td>\(Self.escape(target.name))</td><td>\(Self.escape(target.state))</td>"
                    + "<td>\(target.up ? "yes" : "no")</td></tr>\n"
            }.joined()
        let metricsLink = Self.escape(telemetryPath)
        return """
            <!DOCTYPE html>
            <html lang="en">
            <head><meta charset="utf-8"><title>pgconn_exporter</title></head>
            <body>
            <h1>pgconn_exporter</h1>
            <p>Version: \(Self.escape(version))</p>
            <ul>
            <li><a href="\(metricsLink)">Metrics</a> (\(metricsLink))</li>
            <li><a href="/-/healthy">Healthy</a> (/-/healthy)</li>
            <li><a href="/-/ready">Ready</a> (/-/ready)</li>
            </ul>
            <h2>Targets</h2>
            <table>
            <tr><th>Target</th><th>State</th><th>Up</th></tr>
            \(rows)</table>
            </body>
            </html>

            """
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
