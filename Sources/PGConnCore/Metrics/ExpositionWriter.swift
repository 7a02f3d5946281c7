/// Writes the Prometheus text exposition format 0.0.4 into a byte buffer.
///
/// Families are written whole (HELP, TYPE, then every sample), so the caller decides the order and the
/// output is deterministic: golden tests can compare it byte for byte.
public struct ExpositionWriter: Sendable {
    public private(set) var bytes: [UInt8] = []

    public init(reservingCapacity capacity: Int = 16 * 1024) {
        bytes.reserveCapacity(capacity)
    }

    public enum FamilyType: String, Sendable {
        case counter, gauge, histogram
    }

    /// Writes the `# HELP` and `# TYPE` lines that open a family.
    public mutating func family(_ name: String, _ type: FamilyType, help: String) {
        append("# HELP ")
        append(name)
        append(" ")
        append(Self.escapeHelp(help))
        append("\n# TYPE ")
        append(name)
        append(" ")
        append(type.rawValue)
        append("\n")
    }

    /// Writes one sample line: `name{k="v",...} value`.
    public mutating func sample(_ name: String, _ labels: [(key: String, value: String)] = [], _ value: Double) {
        append(name)
        writeLabels(labels)
        append(" ")
        append(Self.format(value))
        append("\n")
    }

    public mutating func sample(_ name: String, _ labels: [(key: String, value: String)] = [], _ value: UInt64) {
        append(name)
        writeLabels(labels)
        append(" ")
        append(String(value))
        append("\n")
    }

    /// Writes a histogram's `_bucket` (cumulative, with `le`), `_sum` and `_count` samples.
    public mutating func histogram(_ name: String, _ labels: [(key: String, value: String)], _ histogram: Histogram) {
        var cumulative: UInt64 = 0
        let bucketName = name + "_bucket"
        for (index, bound) in histogram.bounds.enumerated() {
            cumulative += histogram.counts[index]
            sample(bucketName, labels + [("le", Self.format(bound))], cumulative)
        }
        sample(bucketName, labels + [("le", "+Inf")], histogram.count)
        sample(name + "_sum", labels, histogram.sum)
        sample(name + "_count", labels, histogram.count)
    }

    private mutating func writeLabels(_ labels: [(key: String, value: String)]) {
        guard !labels.isEmpty else { return }
        append("{")
        for (index, label) in labels.enumerated() {
            if index > 0 { append(",") }
            append(label.key)
            append("=\"")
            append(Self.escapeLabelValue(label.value))
            append("\"")
        }
        append("}")
    }

    private mutating func append(_ text: String) {
        bytes.append(contentsOf: text.utf8)
    }

    /// Formats a sample value: integers without a fraction, `+Inf`, `-Inf`, `NaN` as the format spells them.
    public static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    /// Label values escape backslash, double quote and newline.
    public static func escapeLabelValue(_ value: String) -> String {
        guard value.contains(where: { $0 == "\\" || $0 == "\"" || $0 == "\n" }) else { return value }
        var escaped = ""
        for character in value {
            switch character {
            case "\\": escaped += "\\\\"
            case "\"": escaped += "\\\""
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }

    /// HELP text escapes backslash and newline.
    static func escapeHelp(_ help: String) -> String {
        help.replacing("\\", with: "\\\\").replacing("\n", with: "\\n")
    }
}
