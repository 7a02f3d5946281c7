internal import Yams

/// Reads typed values out of a YAML node tree and collects every error with the path where it occurred.
///
/// Each `read` method returns `nil` after recording an error, so callers carry on and one pass finds all
/// problems. Values are taken from the scalar's text, not from Yams' typed constructors, so `5s`, `"5s"` and
/// `!!str 5s` all mean the same and YAML 1.1 oddities (`1:30` as a base-60 number) do not leak in.
struct ConfigReader {
    /// Error messages, each `path: problem`, in the order found.
    private(set) var messages: [String] = []

    /// How many mappings `<<` merge keys may still bring in, for the whole document. Aliases share nodes, so a
    /// few lines of merges of merges expand exponentially (a "merge bomb": ten lines made 10^8 merges and hung
    /// `--config.check`); a real config merges a handful.
    static let mergeBudget = 1000
    private var mergesLeft = Self.mergeBudget

    /// Records `path: problem`, or just `problem` at the root.
    mutating func report(_ path: String, _ problem: String) {
        messages.append(path.isEmpty ? problem : "\(path): \(problem)")
    }

    /// The path of `key` under `parent`: `defaults.backoff`, or `key` itself at the root.
    static func path(_ parent: String, _ key: String) -> String {
        parent.isEmpty ? key : "\(parent).\(key)"
    }

    /// How a node is named in a type error: `a mapping`, `a sequence`, `an empty value`, or the scalar quoted.
    ///
    /// Pass `revealing: false` where the value could be a misplaced secret (a DSN written as a target): the
    /// scalar is then only called `a string`.
    static func describe(_ node: Node, revealing: Bool = true) -> String {
        switch node {
        case .mapping: return "a mapping"
        case .sequence: return "a sequence"
        case .alias: return "an alias"
        case .scalar(let scalar):
            if node.null != nil { return "an empty value" }
            return revealing ? "\"\(scalar.string)\"" : "a string"
        }
    }

    /// True for a plain `~`, `null` or empty value: a key written without a value.
    static func isNull(_ node: Node) -> Bool { node.null != nil }

    /// The entries of a mapping in file order, with `<<` merge keys expanded (keys written here win).
    ///
    /// A null node reads as an empty mapping when `nullIsEmpty`, so a section whose keys are all commented out
    /// is not an error. Keys must be scalars.
    mutating func mapping(
        _ node: Node, at path: String, expected: String = "a mapping", nullIsEmpty: Bool = true,
        revealing: Bool = true
    ) -> [(key: String, value: Node)]? {
        if nullIsEmpty, Self.isNull(node) { return [] }
        guard case .mapping(let mapping) = node else {
            report(path, "expected \(expected), got \(Self.describe(node, revealing: revealing))")
            return nil
        }
        var entries: [(key: String, value: Node)] = []
        var merged: [(key: String, value: Node)] = []
        for (keyNode, value) in mapping {
            guard case .scalar(let key) = keyNode else {
                report(path, "keys must be strings, got \(Self.describe(keyNode))")
                continue
            }
            if keyNode.tag.description == Tag.Name.merge.rawValue {
                let sources: [Node] = if case .sequence(let list) = value { Array(list) } else { [value] }
                for source in sources {
                    guard mergesLeft > 0 else {
                        if mergesLeft == 0 {
                            report(
                                Self.path(path, "<<"),
                                "more than \(Self.mergeBudget) mappings merged with << in the whole file "
                                    + "(merges of merges through aliases?): refused")
                            mergesLeft = -1
                        }
                        break
                    }
                    mergesLeft -= 1
                    guard
                        let sourceEntries = self.mapping(
                            source, at: Self.path(path, "<<"), expected: "a mapping to merge", nullIsEmpty: false)
                    else { continue }
                    merged += sourceEntries
                }
                continue
            }
            entries.append((key.string, value))
        }
        // Merged keys come after the mapping's own keys and never override them; the first source wins.
        for entry in merged where !entries.contains(where: { $0.key == entry.key }) {
            entries.append(entry)
        }
        return entries
    }

    /// A non-null scalar as text.
    mutating func string(_ node: Node, at path: String) -> String? {
        guard case .scalar(let scalar) = node, !Self.isNull(node) else {
            report(path, "expected a string, got \(Self.describe(node))")
            return nil
        }
        return scalar.string
    }

    /// A Prometheus duration such as `5s` (see ``Duration/init(prometheus:)``).
    mutating func duration(_ node: Node, at path: String) -> Duration? {
        guard case .scalar(let scalar) = node, !Self.isNull(node) else {
            report(path, "expected a duration such as 5s, got \(Self.describe(node))")
            return nil
        }
        do {
            return try Duration(prometheus: scalar.string)
        } catch {
            report(path, error.description)
            return nil
        }
    }

    /// A finite decimal number.
    mutating func number(_ node: Node, at path: String) -> Double? {
        if case .scalar(let scalar) = node, let value = Double(scalar.string), value.isFinite,
            scalar.string.allSatisfy({ $0.isASCII && ($0.isNumber || "+-.eE".contains($0)) })
        {
            return value
        }
        report(path, "expected a number, got \(Self.describe(node))")
        return nil
    }

    /// `true` or `false` (YAML 1.2 core schema spellings only: no `yes`/`on`).
    mutating func boolean(_ node: Node, at path: String) -> Bool? {
        if case .scalar(let scalar) = node {
            switch scalar.string {
            case "true", "True", "TRUE": return true
            case "false", "False", "FALSE": return false
            default: break
            }
        }
        report(path, "expected true or false, got \(Self.describe(node))")
        return nil
    }

    /// A whole decimal number.
    mutating func integer(_ node: Node, at path: String) -> Int? {
        if case .scalar(let scalar) = node, let value = Int(scalar.string) { return value }
        report(path, "expected a whole number, got \(Self.describe(node))")
        return nil
    }
}
