/// Why a Prometheus-style duration such as `1m30s` could not be parsed.
///
/// ``description`` is the whole message (`invalid duration "5x": unknown unit "x" (use ms, s, m, h, d, w, y)`);
/// the config loader prefixes it with the key's path.
public struct DurationParseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The text as written.
    public var text: String
    /// What is wrong with it, without the text.
    public var problem: String

    public init(text: String, problem: String) {
        self.text = text
        self.problem = problem
    }

    public var description: String { "invalid duration \"\(text)\": \(problem)" }
}

extension Duration {
    /// The units Prometheus accepts, largest first, with their length in milliseconds.
    ///
    /// A year is 365 days and a week 7 days, as in Prometheus (`model.ParseDuration`).
    private static let prometheusUnits: [(name: String, milliseconds: Int64)] = [
        ("y", 365 * 86_400_000), ("w", 7 * 86_400_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000),
        ("s", 1_000), ("ms", 1),
    ]

    private static let unitList = "(use ms, s, m, h, d, w, y)"

    /// Parses a Prometheus duration: `500ms`, `5s`, `1m30s`, `1h5m`, `2d`, `1w`, `1y`, or `0`.
    ///
    /// Each part is a whole number followed by a unit; units go from largest to smallest and appear at most once,
    /// as in Prometheus. `0` is the only number accepted without a unit. Negative values, fractions
    /// (`1.5s`: write `1500ms`) and totals beyond what `Int64` nanoseconds can hold (about 292 years) are rejected.
    public init(prometheus text: String) throws(DurationParseError) {
        func failure(_ problem: String) -> DurationParseError { DurationParseError(text: text, problem: problem) }

        if text.isEmpty { throw failure("must not be empty") }
        if text == "0" {
            self = .zero
            return
        }
        if text.hasPrefix("-") { throw failure("must not be negative") }

        var total: Int64 = 0
        var previousUnit: Int?
        var rest = Substring(text)
        while !rest.isEmpty {
            let number = rest.prefix { $0.isASCII && ($0.isNumber || $0 == ".") }
            rest = rest.dropFirst(number.count)
            let unit = rest.prefix { !($0.isASCII && ($0.isNumber || $0 == ".")) }
            rest = rest.dropFirst(unit.count)

            if number.isEmpty { throw failure("expected a number before \"\(unit)\"") }
            if number.contains(".") { throw failure("fractions are not allowed (use a smaller unit, e.g. 1500ms)") }
            if unit.isEmpty { throw failure("missing unit after \(number) \(Self.unitList)") }
            guard let unitIndex = Self.prometheusUnits.firstIndex(where: { $0.name == unit }) else {
                throw failure("unknown unit \"\(unit)\" \(Self.unitList)")
            }
            if let previousUnit, unitIndex <= previousUnit {
                throw failure("units must go from largest to smallest, each at most once")
            }
            previousUnit = unitIndex

            guard let value = Int64(number) else { throw failure("out of range") }
            let (part, overflow) = value.multipliedReportingOverflow(by: Self.prometheusUnits[unitIndex].milliseconds)
            let (sum, sumOverflow) = total.addingReportingOverflow(part)
            // Keep the total representable as Int64 nanoseconds, which `MonotonicInstant` arithmetic relies on.
            guard !overflow, !sumOverflow, sum <= Int64.max / 1_000_000 else { throw failure("out of range") }
            total = sum
        }
        self = .milliseconds(total)
    }

    /// The duration in Prometheus notation (`250ms`, `5s`, `1m30s`, `0s`), for logs and pages.
    ///
    /// Exact for whole milliseconds, which is every value ``init(prometheus:)`` accepts; anything finer is
    /// rounded to the nearest millisecond. A negative duration gets a leading `-` (the parser rejects it).
    public var prometheusString: String {
        let (seconds, attoseconds) = components
        // Rounded milliseconds, computed without overflow for any `Duration` that fits Int64 milliseconds.
        let (wholeMilliseconds, overflow) = seconds.multipliedReportingOverflow(by: 1_000)
        if overflow { return seconds < 0 ? "-inf" : "inf" }
        let fraction = (Double(attoseconds) / 1e15).rounded()
        var milliseconds = wholeMilliseconds &+ Int64(fraction)
        if milliseconds == 0 { return "0s" }

        var text = milliseconds < 0 ? "-" : ""
        milliseconds = milliseconds.magnitude > UInt64(Int64.max) ? .max : abs(milliseconds)
        for unit in Self.prometheusUnits {
            let count = milliseconds / unit.milliseconds
            if count > 0 {
                text += "\(count)\(unit.name)"
                milliseconds -= count * unit.milliseconds
            }
        }
        return text
    }
}
