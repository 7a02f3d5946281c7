public import PGConnCore

/// The status page at `/`: every target with its state, role, latency, last failure and a one-hour timeline.
///
/// Plain HTML and inline SVG, no external assets; a few lines of script only for the filter box (kept in the URL
/// fragment across the page's own refresh every 15 s). Failing targets come first, so the page stays useful with
/// hundreds of targets. Everything shown is escaped.
public enum StatusPage {
    /// One row: the target's health and its recent events (oldest first).
    public struct Row: Sendable {
        public var health: TargetHealth
        public var events: [TargetEvent]

        public init(health: TargetHealth, events: [TargetEvent]) {
            self.health = health
            self.events = events
        }
    }

    static let window = 3600.0
    static let timelineWidth = 240.0

    public static func render(rows: [Row], version: String, telemetryPath: String, now: Double) -> String {
        let sorted = rows.sorted { ($0.health.healthy ? 1 : 0, $0.health.name) < ($1.health.healthy ? 1 : 0, $1.health.name) }
        let failing = rows.count { !$0.health.healthy }
        let body =
            sorted.isEmpty
            ? "<tr><td colspan=\"8\">No targets configured.</td></tr>\n"
            : sorted.map { row($0, now: now) }.joined()
        let metrics = ExporterRouter.escape(telemetryPath)
        return """
            <!DOCTYPE html>
            <html lang="en">
            <head><meta charset="utf-8"><meta http-equiv="refresh" content="15">
            <title>pgconn_exporter</title>
            <style>
            body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}
            table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #ddd;text-align:left}
            th{background:#f3f3f3}.up{color:#17702a;font-weight:600}.down{color:#b3261e;font-weight:600}
            .starting{color:#777}.reason{color:#b3261e;max-width:28em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
            .summary{font-size:16px}svg{display:block}
            </style></head>
            <body>
            <h1>pgconn_exporter</h1>
            <p>Version: \(ExporterRouter.escape(version)) · <a href="\(metrics)">Metrics</a> (\(metrics)) ·
            <a href="/health">Health</a> (/health, /health/&lt;target&gt;) · <a href="/api/v1/events">Events</a>
            (/api/v1/events) · <a href="/-/healthy">Healthy</a> (/-/healthy) · <a href="/-/ready">Ready</a> (/-/ready)</p>
            <p class="summary">\(rows.count) targets, <span class="\(failing == 0 ? "up" : "down")">\(failing) failing</span>
            · <label>Filter <input id="filter" size="24" placeholder="target name"></label></p>
            <table id="targets">
            <tr><th>Target</th><th>State</th><th>Role</th><th>Latency</th><th>Since</th><th>Login</th><th>Last failure</th><th>Last hour</th></tr>
            \(body)</table>
            <script>
            const f=document.getElementById('filter');f.value=decodeURIComponent(location.hash.slice(1));
            const apply=()=>{for(const r of document.querySelectorAll('tr[data-name]'))r.hidden=!r.dataset.name.includes(f.value);
            history.replaceState(null,'','#'+encodeURIComponent(f.value));};f.oninput=apply;apply();
            </script>
            </body>
            </html>

            """
    }

    private static func row(_ row: Row, now: Double) -> String {
        let health = row.health
        let name = ExporterRouter.escape(health.name)
        let status = health.healthy ? "up" : (health.state == "starting" ? "starting" : "down")
        let state = health.healthy ? "up" : (health.up ? "login failing" : health.state)
        let latency = health.latency.map { HealthReport.milliseconds($0) } ?? "–"
        let since = health.since > 0 ? duration(now - health.since) : "–"
        let login =
            switch health.loginUp {
            case true?: "<td class=\"up\">ok</td>"
            case false?:
                "<td class=\"down\" title=\"\(ExporterRouter.escape(health.loginFailure?.message ?? ""))\">"
                    + "failing \(health.loginFailure?.reason.rawValue ?? "")</td>"
            case nil: "<td>–</td>"
            }
        let failure = health.failure.map { failure in
            let sqlstate = failure.sqlstate.map { " \($0)" } ?? ""
            return "<td class=\"reason\" title=\"\(ExporterRouter.escape(failure.message))\">"
                + "\(failure.reason.rawValue)\(sqlstate)</td>"
        } ?? "<td></td>"
        return "<tr data-name=\"\(name)\"><td>\(name)</td><td class=\"\(status)\">\(ExporterRouter.escape(state))</td>"
            + "<td>\(health.role ?? "–")</td><td>\(latency)</td><td>\(since)</td>\(login)\(failure)"
            + "<td>\(timeline(row.events, healthy: health.healthy, now: now))</td></tr>\n"
    }

    /// The last hour as coloured segments from the probe's flips: green succeeding, red failing, grey unknown
    /// (before the first result this process saw).
    static func timeline(_ events: [TargetEvent], healthy: Bool, now: Double) -> String {
        let start = now - window
        let flips = events.filter { $0.kind == .probe }
        var status: String? = flips.last { $0.time < start }.map { $0.to }
        var segments: [(from: Double, status: String?)] = [(start, status)]
        for flip in flips where flip.time >= start && flip.time <= now {
            status = flip.to
            segments.append((flip.time, status))
        }
        var rects = ""
        for (index, segment) in segments.enumerated() {
            let end = index + 1 < segments.count ? segments[index + 1].from : now
            let x = (segment.from - start) / window * timelineWidth
            let width = max(0, (end - segment.from) / window * timelineWidth)
            guard width > 0 else { continue }
            let colour =
                switch segment.status {
                case "succeeding": "#2e9e44"
                case "failing": "#d93025"
                default: "#cccccc"
                }
            rects += "<rect x=\"\(format(x))\" y=\"0\" width=\"\(format(width))\" height=\"12\" fill=\"\(colour)\"/>"
        }
        let label = healthy ? "up now" : "down now"
        return "<svg width=\"\(Int(timelineWidth))\" height=\"12\" role=\"img\" aria-label=\"last hour, \(label)\">"
            + rects + "</svg>"
    }

    private static func format(_ value: Double) -> String { String(Double(Int(value * 10)) / 10) }

    /// `3d 4h`, `2h 5m`, `7m 12s`, `40s`.
    static func duration(_ seconds: Double) -> String {
        let total = max(0, Int(seconds))
        let (days, hours, minutes, secs) = (total / 86400, total / 3600 % 24, total / 60 % 60, total % 60)
        if days > 0 { return "\(days)d \(hours)h" }
        if hours > 0 { return "\(hours)h \(minutes)m" }
        if minutes > 0 { return "\(minutes)m \(secs)s" }
        return "\(secs)s"
    }
}
