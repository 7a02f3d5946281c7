internal import Yams

extension ConfigLoader {
    private static let moduleKeys: Set<String> = [
        "user", "database", "password_file", "password_env", "sslmode", "options", "query", "expect", "timeout",
        "allow", "ports",
    ]

    /// libpq keywords a module's `options` may not set, and where each comes from instead.
    private static let reservedOptions: [String: String] = [
        "host": "the host comes from the probe's target parameter (limit it with allow)",
        "hostaddr": "the host comes from the probe's target parameter (limit it with allow)",
        "port": "the port comes from the probe's target parameter (limit it with ports)",
        "user": "use the module's user key",
        "dbname": "use the module's database key",
        "sslmode": "use the module's sslmode key",
        "password": "passwords are never written in the config: use password_file or password_env",
        "application_name": "the exporter sets it (pgconn_exporter_probe), so a DBA can tell its probes apart",
        "keepalives": "the exporter sets TCP keepalives itself",
        "connect_timeout": "use the module's timeout key (the probe's whole budget)",
    ]

    /// libpq's `sslmode` values: `PQconninfoParse` does not check them, only a connect would.
    private static let sslmodes = ["disable", "allow", "prefer", "require", "verify-ca", "verify-full"]

    /// `modules: {<name>: {user, database, password_file | password_env, sslmode, options, query, expect,
    /// timeout, allow, ports}}`; the result has one element per valid module, in file order.
    ///
    /// Each module's connection string (for localhost:5432) goes through `parseDSN`, so an option libpq does not
    /// know is reported when the config is loaded, not on the first probe.
    static func readModules(
        _ node: Node, reader: inout ConfigReader, parseDSN: (String) -> Result<DSNSummary, DSNError>
    ) -> [ProbeModule] {
        guard
            let entries = reader.mapping(node, at: "modules", expected: "a mapping of module names to their settings")
        else { return [] }
        var modules: [ProbeModule] = []
        for (name, value) in entries {
            if let module = readModule(name: name, value, reader: &reader, parseDSN: parseDSN) {
                modules.append(module)
            }
        }
        return modules
    }

    private static func readModule(
        name: String, _ node: Node, reader: inout ConfigReader, parseDSN: (String) -> Result<DSNSummary, DSNError>
    ) -> ProbeModule? {
        let path = ConfigReader.path("modules", name)
        let before = reader.messages.count
        if name.isEmpty {
            reader.report("modules", "a module name must not be empty")
        } else if let problem = nameProblem(name) {
            reader.report(path, problem)
        }
        guard let entries = reader.mapping(node, at: path) else { return nil }

        var module = ProbeModule(name: name, allow: [])
        var passwordFile: String?
        var passwordEnv: String?
        var allowWritten = false
        for (key, value) in entries {
            let keyPath = ConfigReader.path(path, key)
            switch key {
            case "user": module.user = connectionValue(value, at: keyPath, reader: &reader)
            case "database": module.database = connectionValue(value, at: keyPath, reader: &reader)
            case "sslmode":
                guard let text = nonEmptyString(value, at: keyPath, reader: &reader) else { break }
                if sslmodes.contains(text) {
                    module.sslmode = text
                } else {
                    reader.report(keyPath, "must be one of \(sslmodes.joined(separator: ", "))")
                }
            case "options": module.options = readOptions(value, at: keyPath, reader: &reader)
            case "password_file": passwordFile = nonEmptyString(value, at: keyPath, reader: &reader)
            case "password_env": passwordEnv = nonEmptyString(value, at: keyPath, reader: &reader)
            case "query":
                // The same checks as a target's query (not empty, no COPY).
                var overrides = ProbeSettingsOverrides()
                overrides.read(key: "query", value: value, path: keyPath, reader: &reader)
                if let query = overrides.query { module.query = query }
            case "expect":
                if let role = readExpect(value, at: keyPath, reader: &reader) { module.expect = role }
            case "timeout":
                if let timeout = ProbeSettingsOverrides.positive(reader.duration(value, at: keyPath), keyPath, &reader)
                {
                    module.timeout = timeout
                }
            case "allow":
                allowWritten = true
                module.allow = readAllow(value, at: keyPath, reader: &reader)
            case "ports": module.ports = readPorts(value, at: keyPath, reader: &reader)
            default: reader.report(keyPath, "unknown key")
            }
        }
        if !allowWritten { reportAllowRequired(at: ConfigReader.path(path, "allow"), reader: &reader) }
        if passwordFile != nil, passwordEnv != nil {
            reader.report(path, "password_file and password_env are mutually exclusive")
        }
        module.password =
            if let passwordFile { .file(passwordFile) } else if let passwordEnv { .environment(passwordEnv) } else {
                .none
            }

        guard reader.messages.count == before else { return nil }
        // Only the options can make a module's connection string invalid: every other value is checked above.
        switch parseDSN(module.dsn(for: ProbeAddress(host: "localhost", port: ProbeAddress.defaultPort))) {
        case .success(let summary):
            module.summary = summary
            return module
        case .failure(let error):
            reader.report(module.options.isEmpty ? path : ConfigReader.path(path, "options"), error.message)
            return nil
        }
    }

    /// A user or database name: not empty, and no control characters (a NUL would cut the C string libpq reads).
    private static func connectionValue(_ node: Node, at path: String, reader: inout ConfigReader) -> String? {
        guard let text = nonEmptyString(node, at: path, reader: &reader) else { return nil }
        if hasControlCharacters(text) {
            reader.report(path, "must not contain control characters")
            return nil
        }
        return text
    }

    /// Other libpq keywords, sorted by key. Values are echoed in errors: they cannot be passwords.
    private static func readOptions(
        _ node: Node, at path: String, reader: inout ConfigReader
    ) -> [(key: String, value: String)] {
        guard let entries = reader.mapping(node, at: path, expected: "a mapping of libpq keywords to values") else {
            return []
        }
        var options: [(key: String, value: String)] = []
        for (key, value) in entries {
            let keyPath = ConfigReader.path(path, key)
            if let source = reservedOptions[key] {
                reader.report(keyPath, "not allowed in options: \(source)")
            } else if !isKeyword(key) {
                reader.report(keyPath, "not a libpq keyword (lowercase letters, digits and \"_\")")
            } else if let text = reader.string(value, at: keyPath) {
                if hasControlCharacters(text) {
                    reader.report(keyPath, "must not contain control characters")
                } else {
                    options.append((key, text))
                }
            }
        }
        return options.sorted { $0.key < $1.key }
    }

    /// Host globs and networks; an invalid entry is reported with its index and left out.
    private static func readAllow(_ node: Node, at path: String, reader: inout ConfigReader) -> [ProbeAllowRule] {
        if ConfigReader.isNull(node) {
            reportAllowRequired(at: path, reader: &reader)
            return []
        }
        guard case .sequence(let list) = node else {
            reader.report(path, "expected a list of host globs and CIDRs, got \(ConfigReader.describe(node))")
            return []
        }
        if list.isEmpty { reportAllowRequired(at: path, reader: &reader) }
        var rules: [ProbeAllowRule] = []
        for (index, item) in list.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let text = reader.string(item, at: itemPath) else { continue }
            switch ProbeAllowRule.parse(text) {
            case .success(let rule): rules.append(rule)
            case .failure(let error): reader.report(itemPath, "\"\(text)\": \(error.message)")
            }
        }
        return rules
    }

    private static func reportAllowRequired(at path: String, reader: inout ConfigReader) {
        reader.report(path, "at least one host glob or CIDR is required: nothing is allowed unless listed")
    }

    /// Allowed ports, each once, in file order.
    private static func readPorts(_ node: Node, at path: String, reader: inout ConfigReader) -> [Int]? {
        guard case .sequence(let list) = node else {
            reader.report(path, "expected a list of port numbers, got \(ConfigReader.describe(node))")
            return nil
        }
        if list.isEmpty {
            reader.report(path, "must list at least one port (leave it out to allow any port)")
            return nil
        }
        var ports: [Int] = []
        for (index, item) in list.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let port = reader.integer(item, at: itemPath) else { continue }
            if !(1...65535).contains(port) {
                reader.report(itemPath, "must be from 1 to 65535 (got \(port))")
            } else if ports.contains(port) {
                reader.report(itemPath, "\(port) is listed twice")
            } else {
                ports.append(port)
            }
        }
        return ports
    }

    /// `[a-z][a-z0-9_]*`, the shape of every libpq keyword: keys are not quoted in the connection string.
    private static func isKeyword(_ key: String) -> Bool {
        guard let first = key.unicodeScalars.first, ("a"..."z").contains(first) else { return false }
        return key.unicodeScalars.allSatisfy { ("a"..."z").contains($0) || ("0"..."9").contains($0) || $0 == "_" }
    }

    private static func hasControlCharacters(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }
}
