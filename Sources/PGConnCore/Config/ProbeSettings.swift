internal import Yams

/// The settings that `defaults` sets and each target may override: timings, query, backoff, keepalives.
///
/// Resolution is built-in values, then `defaults`, then the target's own keys, each key on its own (a target's
/// `backoff: {max: 30s}` keeps the other backoff values).
struct ProbeSettings: Equatable {
    var probeInterval: Duration = .seconds(5)
    /// `nil` while neither `defaults` nor the target set it; see ``resolvedProbeTimeout``.
    var probeTimeout: Duration?
    var connectTimeout: Duration = .seconds(5)
    /// `.zero` turns login checks off.
    var loginInterval: Duration = .seconds(60)
    var query = "SELECT 1"
    var backoff = BackoffConfig.default
    var keepalives = KeepaliveConfig.default

    /// The built-in defaults, as documented in DESIGN.md section 5.
    static let builtIn = ProbeSettings()

    /// The probe timeout when none is written: 2s, or `probe_interval` if that is shorter.
    static let defaultProbeTimeout: Duration = .seconds(2)

    /// The probe timeout in effect: the one written, else ``defaultProbeTimeout`` capped at `probe_interval`.
    ///
    /// As Prometheus' `scrape_timeout`: `probe_interval: 1s` alone is valid and probes with a 1s timeout.
    var resolvedProbeTimeout: Duration { probeTimeout ?? min(Self.defaultProbeTimeout, probeInterval) }

    /// These settings with every key that `overrides` sets replaced.
    func applying(_ overrides: ProbeSettingsOverrides) -> ProbeSettings {
        var result = self
        if let value = overrides.probeInterval { result.probeInterval = value }
        if let value = overrides.probeTimeout { result.probeTimeout = value }
        if let value = overrides.connectTimeout { result.connectTimeout = value }
        if let value = overrides.loginInterval { result.loginInterval = value }
        if let value = overrides.query { result.query = value }
        if let value = overrides.backoffInitial { result.backoff.initial = value }
        if let value = overrides.backoffMax { result.backoff.max = value }
        if let value = overrides.backoffMultiplier { result.backoff.multiplier = value }
        if let value = overrides.backoffJitter { result.backoff.jitter = value }
        if let value = overrides.keepaliveIdle { result.keepalives.idle = value }
        if let value = overrides.keepaliveInterval { result.keepalives.interval = value }
        if let value = overrides.keepaliveCount { result.keepalives.count = value }
        if let value = overrides.keepaliveUserTimeout { result.keepalives.userTimeout = value }
        return result
    }
}

/// The ``ProbeSettings`` keys written in one mapping (`defaults` or one target), each valid on its own.
///
/// A key that was written but invalid stays `nil` and is listed in `invalidKeys`, so checks that compare two
/// keys are skipped rather than reporting a second, misleading error.
struct ProbeSettingsOverrides {
    var probeInterval: Duration?
    var probeTimeout: Duration?
    var connectTimeout: Duration?
    var loginInterval: Duration?
    var query: String?
    var backoffInitial: Duration?
    var backoffMax: Duration?
    var backoffMultiplier: Double?
    var backoffJitter: Double?
    var keepaliveIdle: Duration?
    var keepaliveInterval: Duration?
    var keepaliveCount: Int?
    var keepaliveUserTimeout: Duration?
    /// Keys (as written, `backoff.max`) that were present but rejected.
    var invalidKeys: Set<String> = []

    /// The keys this type reads; a mapping may hold others (a target's `name`), which the caller handles.
    static let keys: Set<String> = [
        "probe_interval", "probe_timeout", "connect_timeout", "login_interval", "query", "backoff", "keepalives",
    ]

    /// Reads one key of `defaults` or a target; `path` is the key's own path. The key must be in ``keys``.
    mutating func read(key: String, value: Node, path: String, reader: inout ConfigReader) {
        let before = reader.messages.count
        switch key {
        case "probe_interval": probeInterval = Self.positive(reader.duration(value, at: path), path, &reader)
        case "probe_timeout": probeTimeout = Self.positive(reader.duration(value, at: path), path, &reader)
        case "connect_timeout": connectTimeout = Self.positive(reader.duration(value, at: path), path, &reader)
        case "login_interval": loginInterval = reader.duration(value, at: path)
        case "query":
            query = reader.string(value, at: path)
            if let text = query, text.allSatisfy(\.isWhitespace) {
                reader.report(path, "must not be empty")
                query = nil
            } else if let text = query, let problem = Self.copyProblem(text) {
                reader.report(path, problem)
                query = nil
            }
        case "backoff": readBackoff(value, path: path, reader: &reader)
        case "keepalives": readKeepalives(value, path: path, reader: &reader)
        default: preconditionFailure("ProbeSettingsOverrides.read called with unknown key \(key)")
        }
        if reader.messages.count > before, key != "backoff", key != "keepalives" { invalidKeys.insert(key) }
    }

    private mutating func readBackoff(_ node: Node, path: String, reader: inout ConfigReader) {
        guard let entries = reader.mapping(node, at: path) else { return }
        for (key, value) in entries {
            let keyPath = ConfigReader.path(path, key)
            let before = reader.messages.count
            switch key {
            case "initial": backoffInitial = Self.positive(reader.duration(value, at: keyPath), keyPath, &reader)
            case "max": backoffMax = Self.positive(reader.duration(value, at: keyPath), keyPath, &reader)
            case "multiplier":
                backoffMultiplier = reader.number(value, at: keyPath)
                if let multiplier = backoffMultiplier, multiplier < 1 {
                    reader.report(keyPath, "must be at least 1")
                    backoffMultiplier = nil
                }
            case "jitter":
                backoffJitter = reader.number(value, at: keyPath)
                if let jitter = backoffJitter, !(0...1).contains(jitter) {
                    reader.report(keyPath, "must be between 0 and 1")
                    backoffJitter = nil
                }
            default: reader.report(keyPath, "unknown key")
            }
            if reader.messages.count > before { invalidKeys.insert("backoff.\(key)") }
        }
    }

    private mutating func readKeepalives(_ node: Node, path: String, reader: inout ConfigReader) {
        guard let entries = reader.mapping(node, at: path) else { return }
        for (key, value) in entries {
            let keyPath = ConfigReader.path(path, key)
            switch key {
            case "idle": keepaliveIdle = Self.wholeSeconds(reader.duration(value, at: keyPath), keyPath, &reader)
            case "interval":
                keepaliveInterval = Self.wholeSeconds(reader.duration(value, at: keyPath), keyPath, &reader)
            case "count":
                keepaliveCount = reader.integer(value, at: keyPath)
                if let count = keepaliveCount, count < 1 {
                    reader.report(keyPath, "must be at least 1")
                    keepaliveCount = nil
                }
            case "user_timeout": keepaliveUserTimeout = reader.duration(value, at: keyPath)
            default: reader.report(keyPath, "unknown key")
            }
        }
    }

    /// Why `query` cannot be a probe because one of its statements is a COPY, or `nil`.
    ///
    /// A COPY makes the server stream rows (or wait for them, `FROM STDIN`) instead of returning a result: the
    /// probe would never finish as a query, and a `COPY ... TO STDOUT` of a big table floods the exporter.
    private static func copyProblem(_ query: String) -> String? {
        let words = SQLStatements.leadingWords(of: query)
        guard let index = words.firstIndex(of: "copy") else { return nil }
        return "COPY is not allowed in a probe query (statement \(index + 1) of \(words.count) starts with COPY, "
            + "which streams data instead of returning a result)"
    }

    /// `duration` if it is greater than zero; otherwise reports it and returns `nil`.
    static func positive(_ duration: Duration?, _ path: String, _ reader: inout ConfigReader) -> Duration? {
        guard let duration else { return nil }
        if duration <= .zero {
            reader.report(path, "must be greater than 0")
            return nil
        }
        return duration
    }

    /// A positive whole number of seconds: libpq takes `keepalives_idle` and `keepalives_interval` in seconds.
    private static func wholeSeconds(
        _ duration: Duration?, _ path: String, _ reader: inout ConfigReader
    ) -> Duration? {
        guard let duration = positive(duration, path, &reader) else { return nil }
        if duration.components.attoseconds != 0 {
            reader.report(path, "must be a whole number of seconds (libpq takes seconds)")
            return nil
        }
        return duration
    }

    /// Checks that need two keys, on the settings `resolved` for this mapping, reported under `path`.
    ///
    /// A check runs only when this mapping wrote one of its keys and neither is invalid here, so a bad value in
    /// `defaults` is reported once, not again for every target that inherits it.
    func checkConsistency(of resolved: ProbeSettings, path: String, reader: inout ConfigReader) {
        if probeInterval != nil || probeTimeout != nil,
            invalidKeys.isDisjoint(with: ["probe_interval", "probe_timeout"]),
            resolved.resolvedProbeTimeout > resolved.probeInterval
        {
            reader.report(
                ConfigReader.path(path, "probe_timeout"),
                "must not be longer than probe_interval (\(resolved.resolvedProbeTimeout.prometheusString) > "
                    + "\(resolved.probeInterval.prometheusString))")
        }
        if backoffInitial != nil || backoffMax != nil,
            invalidKeys.isDisjoint(with: ["backoff.initial", "backoff.max"]),
            resolved.backoff.max < resolved.backoff.initial
        {
            reader.report(
                ConfigReader.path(path, "backoff.max"),
                "must not be shorter than backoff.initial (\(resolved.backoff.max.prometheusString) < "
                    + "\(resolved.backoff.initial.prometheusString))")
        }
    }
}
