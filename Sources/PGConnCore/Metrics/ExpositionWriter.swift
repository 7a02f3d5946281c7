/// Writes the Prometheus text exposition format 0.0.4 into a byte buffer.
///
/// Families are written whole (HELP, TYPE, then every sample), so the caller decides the order and the
/// output is deterministic: golden tests can compare it byte for byte. The scrape path of thousands of targets
/// runs through here, so it appends bytes directly: a target's labels are rendered and escaped once
/// (``LabelSet``), the one varying label of a sample (`reason`, `state`, `le`) is appended in place, integers
/// are written digit by digit, and bucket bounds are formatted once per writer.
public struct ExpositionWriter: Sendable {
    public private(set) var bytes: [UInt8] = []
    private var boundText: [Double: [UInt8]] = [:]

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

    /// Writes one sample line: `name{labels,extra} value`.
    public mutating func sample(_ name: String, _ labels: LabelSet, _ extra: (key: String, value: String)?, _ value: Double) {
        writeSeries(name, labels, extra)
        appendNumber(value)
        bytes.append(UInt8(ascii: "\n"))
    }

    public mutating func sample(_ name: String, _ labels: LabelSet, _ extra: (key: String, value: String)?, _ value: UInt64) {
        writeSeries(name, labels, extra)
        appendInteger(value)
        bytes.append(UInt8(ascii: "\n"))
    }

    public mutating func sample(_ name: String, _ labels: [(key: String, value: String)] = [], _ value: Double) {
        sample(name, LabelSet(labels), nil, value)
    }

    public mutating func sample(_ name: String, _ labels: [(key: String, value: String)] = [], _ value: UInt64) {
        sample(name, LabelSet(labels), nil, value)
    }

    /// Writes a histogram's `_bucket` (cumulative, with `le`), `_sum` and `_count` samples.
    public mutating func histogram(_ name: String, _ labels: LabelSet, _ histogram: Histogram) {
        var cumulative: UInt64 = 0
        let bucketName = name + "_bucket"
        for (index, bound) in histogram.bounds.enumerated() {
            cumulative += histogram.counts[index]
            openSeries(bucketName, labels)
            if !labels.isEmpty { bytes.append(UInt8(ascii: ",")) }
            append("le=\"")
            appendBound(bound)
            append("\"} ")
            appendInteger(cumulative)
            bytes.append(UInt8(ascii: "\n"))
        }
        sample(bucketName, labels, ("le", "+Inf"), histogram.count)
        sample(name + "_sum", labels, nil, histogram.sum)
        sample(name + "_count", labels, nil, histogram.count)
    }

    public mutating func histogram(_ name: String, _ labels: [(key: String, value: String)], _ histogram: Histogram) {
        self.histogram(name, LabelSet(labels), histogram)
    }

    // MARK: - Bytes

    /// `name{labels,extra} ` (or `name ` without labels), ready for the value.
    private mutating func writeSeries(_ name: String, _ labels: LabelSet, _ extra: (key: String, value: String)?) {
        guard !labels.isEmpty || extra != nil else {
            append(name)
            bytes.append(UInt8(ascii: " "))
            return
        }
        openSeries(name, labels)
        if let extra {
            if !labels.isEmpty { bytes.append(UInt8(ascii: ",")) }
            LabelSet.appendLabel(extra.key, extra.value, to: &bytes)
        }
        append("} ")
    }

    /// `name{labels`: the caller adds any further label and the closing brace.
    private mutating func openSeries(_ name: String, _ labels: LabelSet) {
        append(name)
        bytes.append(UInt8(ascii: "{"))
        bytes.append(contentsOf: labels.rendered)
    }

    private mutating func append(_ text: String) {
        bytes.append(contentsOf: text.utf8)
    }

    private mutating func appendBound(_ bound: Double) {
        if let text = boundText[bound] {
            bytes.append(contentsOf: text)
        } else {
            let text = Array(Self.format(bound).utf8)
            boundText[bound] = text
            bytes.append(contentsOf: text)
        }
    }

    private mutating func appendNumber(_ value: Double) {
        if value == value.rounded(), abs(value) < 1e15 {
            if value < 0 { bytes.append(UInt8(ascii: "-")) }
            appendInteger(UInt64(abs(value)))
        } else {
            append(Self.format(value))
        }
    }

    /// Decimal digits without going through `String`.
    private mutating func appendInteger(_ value: UInt64) {
        if value < 10 {
            bytes.append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        var count = 0
        var rest = value
        withUnsafeMutableBytes(of: &digits) { buffer in
            while rest > 0 {
                buffer[19 - count] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
                count += 1
            }
            bytes.append(contentsOf: buffer[(20 - count)...])
        }
    }

    // MARK: - Text rules

    /// Formats a sample value: integers without a fraction, `+Inf`, `-Inf`, `NaN` as the format spells them.
    public static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    /// Label values escape backslash, double quote and newline.
    public static func escapeLabelValue(_ value: String) -> String {
        var bytes: [UInt8] = []
        LabelSet.appendEscaped(value, to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// HELP text escapes backslash and newline.
    static func escapeHelp(_ help: String) -> String {
        help.replacing("\\", with: "\\\\").replacing("\n", with: "\\n")
    }
}

/// Labels rendered once as `k1="v1",k2="v2"` (values escaped), to be written before each sample of a series.
public struct LabelSet: Sendable {
    fileprivate private(set) var rendered: [UInt8] = []

    public init(_ labels: [(key: String, value: String)] = []) {
        for label in labels { append(label.key, label.value) }
    }

    public var isEmpty: Bool { rendered.isEmpty }

    public mutating func append(_ key: String, _ value: String) {
        if !rendered.isEmpty { rendered.append(UInt8(ascii: ",")) }
        Self.appendLabel(key, value, to: &rendered)
    }

    fileprivate static func appendLabel(_ key: String, _ value: String, to bytes: inout [UInt8]) {
        bytes.append(contentsOf: key.utf8)
        bytes.append(UInt8(ascii: "="))
        bytes.append(UInt8(ascii: "\""))
        appendEscaped(value, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    fileprivate static func appendEscaped(_ value: String, to bytes: inout [UInt8]) {
        let utf8 = value.utf8
        guard utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") })
        else {
            bytes.append(contentsOf: utf8)
            return
        }
        for byte in utf8 {
            switch byte {
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\n"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            default: bytes.append(byte)
            }
        }
    }
}
