/// What `/health` says about one target, computed from its series at request time.
public struct TargetHealth: Sendable, Equatable {
    public var name: String
    /// Healthy under the policy: the session is up and not stale, and (with `health.login`) the last login
    /// check passed.
    public var healthy: Bool
    /// `pgconn_up`: the session's last probe succeeded and is recent.
    public var up: Bool
    /// `connecting`, `up`, `backoff`, or `starting` before the first state.
    public var state: String
    /// `primary`, `standby`, or `nil` when the server never said (a pooler).
    public var role: String?
    /// The failure that explains an unhealthy target: the login check's when only it fails, else the session's.
    public var failure: Failure?
    /// Unix seconds since when the probe has been succeeding (or failing), 0 before the first result.
    public var since: Double
    public var latency: Duration?
    public var consecutiveFailures: Int
    /// The last login check: `nil` when checks are off or none has finished yet.
    public var loginUp: Bool?
    /// Why the last login check failed, whatever the policy says of login checks.
    public var loginFailure: Failure? = nil
    /// Whether it counts toward the overall answer (`health.targets`).
    public var counted: Bool

    /// Whether it passes a `?role=` filter: up and in that role.
    public func isUp(inRole role: String) -> Bool { healthy && self.role == role }
}

/// What `/health` needs at request time: every target's health and the policy in force.
public struct HealthSnapshot: Sendable {
    public var targets: [TargetHealth]
    public var policy: HealthPolicy

    public init(targets: [TargetHealth], policy: HealthPolicy) {
        self.targets = targets
        self.policy = policy
    }
}

/// `/health`: the policy applied to the current series, and its text and JSON bodies.
///
/// Pure and computed from the store's snapshot, so a health check costs microseconds and never touches a
/// database.
public enum HealthReport {
    /// One entry per target, in config order.
    public static func targets(_ series: [TargetSeries], policy: HealthPolicy, now: MonotonicInstant) -> [TargetHealth] {
        let counted = policy.targets.map(Set.init)
        return series.map { series in
            let up = series.isUp(now: now)
            let loginUp: Bool? = series.loginEnabled && series.loginChecked ? series.loginUp : nil
            let loginHolds = !policy.login || !series.loginEnabled || loginUp == true
            let healthy = up && loginHolds
            let failure = up && !loginHolds ? series.loginFailure : (up ? nil : series.lastFailure)
            return TargetHealth(
                name: series.name, healthy: healthy, up: up, state: series.state?.rawValue ?? "starting",
                role: series.inRecovery.map { $0 ? "standby" : "primary" }, failure: failure, since: series.healthSince,
                latency: series.lastProbeDuration, consecutiveFailures: series.consecutiveFailures, loginUp: loginUp,
                loginFailure: loginUp == false ? series.loginFailure : nil, counted: counted?.contains(series.name) ?? true)
        }
    }

    /// Whether the policy holds over the counted targets. No counted target is unhealthy (nothing to serve).
    public static func holds(_ targets: [TargetHealth], policy: HealthPolicy) -> Bool {
        let counted = targets.filter(\.counted)
        let healthy = counted.count { $0.healthy }
        switch policy.require {
        case .all: return !counted.isEmpty && healthy == counted.count
        case .any: return healthy >= 1
        case .atLeast(let count): return healthy >= count
        }
    }

    /// One line per target: `primary up 1.2ms role=primary since 2026-11-28T06:00:00Z`, or
    /// `replica down reason=refused sqlstate= since 2026-11-28T06:00:00Z failures=12`.
    public static func text(_ targets: [TargetHealth]) -> String {
        targets.map { target in
            var line = "\(target.name) \(target.healthy ? "up" : "down")"
            if target.healthy, let latency = target.latency { line += " \(milliseconds(latency))" }
            if !target.healthy {
                if target.up { line += " login" }  // the session is fine, the login check is not
                line += " reason=\(target.failure?.reason.rawValue ?? "none") sqlstate=\(target.failure?.sqlstate ?? "")"
            }
            if let role = target.role { line += " role=\(role)" }
            line += " since \(target.since > 0 ? RFC3339.format(target.since) : "-")"
            if !target.healthy { line += " failures=\(target.consecutiveFailures)" }
            return line + "\n"
        }.joined()
    }

    /// `{"healthy":true,"require":"all","targets":[{...}, ...]}`; a failure's message is cut to 300 characters.
    public static func json(_ targets: [TargetHealth], policy: HealthPolicy, healthy: Bool) -> String {
        let require: String =
            switch policy.require {
            case .all: "all"
            case .any: "any"
            case .atLeast(let count): String(count)
            }
        let entries = targets.map { target in
            var fields: [String] = [
                "\"name\":\(JSONText.quoted(target.name))", "\"healthy\":\(target.healthy)", "\"up\":\(target.up)",
                "\"state\":\(JSONText.quoted(target.state))",
                "\"role\":\(target.role.map(JSONText.quoted) ?? "null")",
                "\"since\":\(target.since > 0 ? JSONText.quoted(RFC3339.format(target.since)) : "null")",
                "\"latency_seconds\":\(target.latency.map { "\($0.seconds)" } ?? "null")",
                "\"consecutive_failures\":\(target.consecutiveFailures)",
                "\"login_up\":\(target.loginUp.map { "\($0)" } ?? "null")",
                "\"counted\":\(target.counted)",
            ]
            if let failure = target.failure {
                fields.append("\"reason\":\(JSONText.quoted(failure.reason.rawValue))")
                fields.append("\"sqlstate\":\(failure.sqlstate.map(JSONText.quoted) ?? "null")")
                fields.append("\"message\":\(JSONText.quoted(String(failure.message.prefix(300))))")
            } else {
                fields += ["\"reason\":null", "\"sqlstate\":null", "\"message\":null"]
            }
            return "{" + fields.joined(separator: ",") + "}"
        }
        return "{\"healthy\":\(healthy),\"require\":\(JSONText.quoted(require)),\"targets\":["
            + entries.joined(separator: ",") + "]}\n"
    }

    /// `1.2ms`: a latency to one decimal of a millisecond.
    public static func milliseconds(_ duration: Duration) -> String {
        let ms = duration.seconds * 1000
        let tenths = (ms * 10).rounded()
        return "\(Int(tenths) / 10).\(Int(tenths) % 10)ms"
    }
}

/// JSON string literals, for the few hand-written JSON bodies and log lines.
public enum JSONText {
    public static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// RFC 3339 timestamps in UTC with milliseconds, computed without the C library (days to civil date after
/// Howard Hinnant's `civil_from_days`).
public enum RFC3339 {
    public static func format(_ unixSeconds: Double) -> String {
        let totalMilliseconds = Int64((unixSeconds * 1000).rounded())
        let milliseconds = Int(((totalMilliseconds % 1000) + 1000) % 1000)
        let seconds = (totalMilliseconds - Int64(milliseconds)) / 1000
        let days = Int(seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400)
        let secondOfDay = Int(seconds - Int64(days) * 86400)
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * monthIndex + 2) / 5 + 1
        let month = monthIndex < 10 ? monthIndex + 3 : monthIndex - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        func pad(_ value: Int, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(year, 4))-\(pad(month, 2))-\(pad(day, 2))T\(pad(secondOfDay / 3600, 2)):"
            + "\(pad(secondOfDay / 60 % 60, 2)):\(pad(secondOfDay % 60, 2)).\(pad(milliseconds, 3))Z"
    }
}
