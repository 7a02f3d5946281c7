internal import Yams

/// Turns the YAML config (DESIGN.md section 5) into a ``ValidatedConfig``, or every reason it cannot.
///
/// The YAML is composed into a node tree with Yams and walked by hand, so unknown keys are rejected and every
/// error names its path (`targets[2].dsn: ...`). Problems are collected in one pass rather than stopping at the
/// first. Connection strings are checked by the injected `parseDSN`, because libpq's parser lives outside the
/// core; password files are not read here but on every connect, so a rotated secret needs no reload. The
/// loader does no I/O: the executable reads the config file and hands over its text.
public enum ConfigLoader {
    /// Loads a config from YAML text.
    public static func load(
        yaml: String, parseDSN: (String) -> Result<DSNSummary, DSNError>
    ) -> Result<ValidatedConfig, ConfigError> {
        let root: Node?
        do {
            root = try Yams.compose(yaml: yaml)
        } catch let error as YamlError {
            return .failure(ConfigError(messages: [syntaxMessage(error)]))
        } catch {
            return .failure(ConfigError(messages: ["invalid YAML: \(error)"]))
        }
        var reader = ConfigReader()
        let config = readConfig(root ?? Node.mapping(.init([])), reader: &reader, parseDSN: parseDSN)
        if let config, reader.messages.isEmpty { return .success(config) }
        return .failure(ConfigError(messages: reader.messages))
    }

    // MARK: - Sections

    private static let topLevelKeys: Set<String> = ["defaults", "health", "metrics", "modules", "targets"]
    private static let targetKeys: Set<String> = [
        "name", "dsn", "password_file", "password_env", "expect", "labels", "max_replay_lag",
    ]
    /// Labels `pgconn_target_info` sets itself.
    private static let reservedLabels: Set<String> = ["target", "host", "port", "database", "user", "sslmode"]

    /// Walks the whole document; returns `nil` when a required part is missing (the reader holds why).
    private static func readConfig(
        _ root: Node, reader: inout ConfigReader, parseDSN: (String) -> Result<DSNSummary, DSNError>
    ) -> ValidatedConfig? {
        guard
            let entries = reader.mapping(
                root, at: "",
                expected: "a mapping with defaults, health, metrics, modules and targets at the top level",
                revealing: false)
        else { return nil }
        for (key, _) in entries where !topLevelKeys.contains(key) {
            reader.report(key, "unknown key")
        }
        let section = { (name: String) in entries.first(where: { $0.key == name })?.value }

        var defaults = ProbeSettings.builtIn
        if let node = section("defaults") {
            defaults = readDefaults(node, reader: &reader)
        }

        var targets: [TargetConfig] = []
        var targetCount = 0
        switch section("targets") {
        case .sequence(let list)?:
            targetCount = list.count
            targets = readTargets(Array(list), defaults: defaults, reader: &reader, parseDSN: parseDSN)
            if targetCount == 0 { reader.report("targets", "at least one target is required") }
        case let node? where !ConfigReader.isNull(node):
            reader.report(
                "targets", "expected a sequence of targets, got \(ConfigReader.describe(node, revealing: false))")
        default:
            reader.report("targets", "at least one target is required")
        }

        var health = HealthPolicy()
        if let node = section("health") {
            health = readHealth(node, targets: targets, targetCount: targetCount, reader: &reader)
        }
        var modules: [ProbeModule] = []
        if let node = section("modules") {
            modules = readModules(node, reader: &reader, parseDSN: parseDSN)
        }
        var metrics = MetricsDetail()
        if let node = section("metrics") {
            metrics = readMetrics(node, reader: &reader)
        }
        guard targets.count == targetCount, targetCount > 0 else { return nil }
        return ValidatedConfig(health: health, targets: targets, modules: modules, metrics: metrics)
    }

    private static func readDefaults(_ node: Node, reader: inout ConfigReader) -> ProbeSettings {
        guard let entries = reader.mapping(node, at: "defaults") else { return .builtIn }
        var overrides = ProbeSettingsOverrides()
        for (key, value) in entries {
            let path = ConfigReader.path("defaults", key)
            if ProbeSettingsOverrides.keys.contains(key) {
                overrides.read(key: key, value: value, path: path, reader: &reader)
            } else {
                reader.report(path, "unknown key")
            }
        }
        let resolved = ProbeSettings.builtIn.applying(overrides)
        overrides.checkConsistency(of: resolved, path: "defaults", reader: &reader)
        return resolved
    }

    /// Reads every target; the result has one element per valid target, in file order.
    private static func readTargets(
        _ nodes: [Node], defaults: ProbeSettings, reader: inout ConfigReader,
        parseDSN: (String) -> Result<DSNSummary, DSNError>
    ) -> [TargetConfig] {
        var firstIndexByName: [String: Int] = [:]
        var targets: [TargetConfig] = []
        for (index, node) in nodes.enumerated() {
            let path = "targets[\(index)]"
            let before = reader.messages.count
            guard let entries = reader.mapping(node, at: path, nullIsEmpty: false, revealing: false) else {
                continue
            }
            var name: String?
            var dsn: String?
            var summary: DSNSummary?
            var passwordFile: String?
            var passwordEnv: String?
            var expect = ExpectedRole.any
            var labels: [(key: String, value: String)] = []
            var maxReplayLag: Duration?
            var overrides = ProbeSettingsOverrides()

            for (key, value) in entries {
                let keyPath = ConfigReader.path(path, key)
                switch key {
                case "name":
                    guard let text = nonEmptyString(value, at: keyPath, reader: &reader) else { break }
                    name = text
                    if let problem = nameProblem(text) {
                        reader.report(keyPath, problem)
                    } else if let first = firstIndexByName[text] {
                        reader.report(keyPath, "duplicate target name \"\(text)\" (first at targets[\(first)])")
                    } else {
                        firstIndexByName[text] = index
                    }
                case "dsn":
                    // Never echo the value: it may hold a password.
                    guard case .scalar(let scalar) = value else {
                        reader.report(keyPath, "expected a string, got \(ConfigReader.describe(value))")
                        dsn = ""
                        break
                    }
                    dsn = ConfigReader.isNull(value) ? "" : scalar.string
                    if let text = dsn, text.allSatisfy(\.isWhitespace) {
                        reader.report(keyPath, "must not be empty")
                    } else if let text = dsn {
                        switch parseDSN(text) {
                        case .success(let parsed): summary = parsed
                        case .failure(let error): reader.report(keyPath, error.message)
                        }
                    }
                case "password_file":
                    passwordFile = nonEmptyString(value, at: keyPath, reader: &reader)
                case "password_env":
                    passwordEnv = nonEmptyString(value, at: keyPath, reader: &reader)
                case "expect":
                    if let role = readExpect(value, at: keyPath, reader: &reader) { expect = role }
                case "labels":
                    labels = readLabels(value, at: keyPath, reader: &reader)
                case "max_replay_lag":
                    maxReplayLag = ProbeSettingsOverrides.positive(
                        reader.duration(value, at: keyPath), keyPath, &reader)
                case _ where ProbeSettingsOverrides.keys.contains(key):
                    overrides.read(key: key, value: value, path: keyPath, reader: &reader)
                default:
                    reader.report(keyPath, "unknown key")
                }
            }

            if name == nil, !entries.contains(where: { $0.key == "name" }) {
                reader.report(ConfigReader.path(path, "name"), "required")
            }
            if dsn == nil {
                reader.report(ConfigReader.path(path, "dsn"), "required")
            }
            if passwordFile != nil, passwordEnv != nil {
                reader.report(path, "password_file and password_env are mutually exclusive")
            }
            if maxReplayLag != nil, expect != .standby {
                reader.report(
                    ConfigReader.path(path, "max_replay_lag"), "needs expect: standby (only a standby replays)")
            }
            let settings = defaults.applying(overrides)
            overrides.checkConsistency(of: settings, path: path, reader: &reader)

            guard reader.messages.count == before, let name, let dsn, let summary else { continue }
            let password: PasswordSource =
                if let passwordFile { .file(passwordFile) } else if let passwordEnv { .environment(passwordEnv) } else {
                    .none
                }
            targets.append(
                TargetConfig(
                    name: name, dsn: dsn, summary: summary, password: password, query: settings.query,
                    probeInterval: settings.probeInterval, probeTimeout: settings.resolvedProbeTimeout,
                    connectTimeout: settings.connectTimeout, loginInterval: settings.loginInterval,
                    backoff: settings.backoff, keepalives: settings.keepalives, expect: expect, labels: labels,
                    maxReplayLag: maxReplayLag))
        }
        return targets
    }

    /// Why `name` is not a valid target or module name, or `nil`: a target's becomes the `target` label and a URL
    /// path segment, a module's a URL query parameter.
    static func nameProblem(_ name: String) -> String? {
        if name.count > 64 { return "must be at most 64 characters (got \(name.count))" }
        let allowed = name.unicodeScalars.allSatisfy { scalar in
            scalar.isASCII
                && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar)
                    || "_.-".unicodeScalars.contains(scalar))
        }
        if allowed { return nil }
        // A connection string written as a name may hold a password: it is described, not echoed.
        let looksLikeDSN = name.contains("://") || name.contains("=") || name.contains("@")
        let shown = looksLikeDSN ? "a name that looks like a connection string" : "\"\(name)\""
        return "\(shown) may only contain letters, digits, \"_\", \".\" and \"-\""
    }

    /// A string that is neither empty nor a key written without a value.
    static func nonEmptyString(_ node: Node, at path: String, reader: inout ConfigReader) -> String? {
        if ConfigReader.isNull(node) {
            reader.report(path, "must not be empty")
            return nil
        }
        guard let text = reader.string(node, at: path) else { return nil }
        if text.isEmpty {
            reader.report(path, "must not be empty")
            return nil
        }
        return text
    }

    /// `primary`, `standby` or `any`.
    static func readExpect(_ node: Node, at path: String, reader: inout ConfigReader) -> ExpectedRole? {
        let text = if case .scalar(let scalar) = node { scalar.string } else { "" }
        guard let role = ExpectedRole(rawValue: text) else {
            reader.report(path, "must be \"primary\", \"standby\" or \"any\"")
            return nil
        }
        return role
    }

    /// Extra `pgconn_target_info` labels, sorted by name.
    private static func readLabels(
        _ node: Node, at path: String, reader: inout ConfigReader
    ) -> [(key: String, value: String)] {
        guard let entries = reader.mapping(node, at: path, expected: "a mapping of label names to values") else {
            return []
        }
        var labels: [(key: String, value: String)] = []
        for (key, value) in entries {
            let keyPath = ConfigReader.path(path, key)
            if !isLabelName(key) {
                reader.report(keyPath, "invalid label name (must match [a-zA-Z_][a-zA-Z0-9_]*)")
            } else if key.hasPrefix("__") {
                reader.report(keyPath, "label names starting with \"__\" are reserved by Prometheus")
            } else if reservedLabels.contains(key) {
                reader.report(keyPath, "reserved label name (pgconn_target_info sets it)")
            } else if let text = reader.string(value, at: keyPath) {
                labels.append((key, text))
            }
        }
        return labels.sorted { $0.key < $1.key }
    }

    private static func isLabelName(_ name: String) -> Bool {
        guard let first = name.unicodeScalars.first, first == "_" || (first.isASCII && first.properties.isAlphabetic)
        else { return false }
        return name.unicodeScalars.allSatisfy { scalar in
            scalar == "_" || (scalar.isASCII && (scalar.properties.isAlphabetic || ("0"..."9").contains(scalar)))
        }
    }

    // MARK: - Errors from outside the walk

    /// A YAML syntax error as one line: `YAML syntax error at line 3, column 8: <problem> (<context>)`.
    static func syntaxMessage(_ error: YamlError) -> String {
        func context(_ context: YamlError.Context?) -> String {
            guard let context else { return "" }
            return " (\(context.text) at line \(context.mark.line), column \(context.mark.column))"
        }
        switch error {
        case .scanner(let ctx, let problem, let mark, _), .parser(let ctx, let problem, let mark, _),
            .composer(let ctx, let problem, let mark, _):
            return "YAML syntax error at line \(mark.line), column \(mark.column): \(problem)\(context(ctx))"
        case .duplicatedKeysInMapping(let duplicates, let ctx):
            // Yams puts the whole document in `ctx.text`; only the position of the first duplicate is useful.
            let keys = duplicates.map { "\"\($0)\"" }.joined(separator: ", ")
            return "YAML error at line \(ctx.mark.line), column \(ctx.mark.column): duplicate key \(keys)"
        case .reader(let problem, let offset, _, _):
            return "YAML error at offset \(offset.map(String.init) ?? "?"): \(problem)"
        default:
            return "YAML error: \(error)"
        }
    }
}
