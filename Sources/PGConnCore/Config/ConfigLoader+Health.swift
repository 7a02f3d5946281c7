import Yams

extension ConfigLoader {
    /// `health: {require: all | any | N, targets: [names], login: bool}`.
    static func readHealth(
        _ node: Node, targets: [TargetConfig], targetCount: Int, reader: inout ConfigReader
    ) -> HealthPolicy {
        guard let entries = reader.mapping(node, at: "health") else { return HealthPolicy() }
        var policy = HealthPolicy()
        var requirePath: String?
        for (key, value) in entries {
            let path = ConfigReader.path("health", key)
            switch key {
            case "require":
                requirePath = path
                if let requirement = readRequirement(value, at: path, reader: &reader) { policy.require = requirement }
            case "targets":
                policy.targets = readTargetNames(value, at: path, known: targets, reader: &reader)
            case "login":
                if let login = reader.boolean(value, at: path) { policy.login = login }
            default:
                reader.report(path, "unknown key")
            }
        }
        if case .atLeast(let count) = policy.require, let requirePath {
            let counted = policy.targets?.count ?? targetCount
            let which = policy.targets == nil ? "are configured" : "are listed in health.targets"
            if counted > 0, count > counted {
                reader.report(requirePath, "requires \(count) healthy targets but only \(counted) \(which)")
            }
        }
        return policy
    }

    private static func readRequirement(_ node: Node, at path: String, reader: inout ConfigReader) -> HealthRequirement? {
        let text = if case .scalar(let scalar) = node { scalar.string } else { "" }
        switch text {
        case "all": return .all
        case "any": return .any
        default:
            guard let count = Int(text), count >= 1 else {
                reader.report(path, "must be \"all\", \"any\" or a positive number of targets")
                return nil
            }
            return .atLeast(count)
        }
    }

    /// Names of configured targets, each once; an unknown or repeated name is an error with its index.
    private static func readTargetNames(
        _ node: Node, at path: String, known: [TargetConfig], reader: inout ConfigReader
    ) -> [String]? {
        guard case .sequence(let list) = node else {
            reader.report(path, "expected a list of target names, got \(ConfigReader.describe(node))")
            return nil
        }
        let names = Set(known.map(\.name))
        var seen: Set<String> = []
        var result: [String] = []
        for (index, item) in list.enumerated() {
            let itemPath = "\(path)[\(index)]"
            guard let name = reader.string(item, at: itemPath) else { continue }
            if !names.contains(name) {
                reader.report(itemPath, "no target named \"\(name)\"")
            } else if !seen.insert(name).inserted {
                reader.report(itemPath, "\"\(name)\" is listed twice")
            } else {
                result.append(name)
            }
        }
        if list.isEmpty { reader.report(path, "must list at least one target (leave it out to count every target)") }
        return result
    }
}
