import PGConnCore
import Testing

@Suite("Duration(prometheus:) and prometheusString")
struct PrometheusDurationTests {
    /// 1y2w3d4h5m6s7ms in milliseconds.
    static let yearTwoWeeksEtc: Int64 = ((((365 + 14 + 3) * 24 + 4) * 60 + 5) * 60 + 6) * 1000 + 7

    static let valid: [(String, Duration)] = [
        ("0", Duration.zero),
        ("0s", .zero),
        ("0ms", .zero),
        ("500ms", .milliseconds(500)),
        ("5s", .seconds(5)),
        ("1m", .seconds(60)),
        ("1h", .seconds(3600)),
        ("1d", .seconds(86_400)),
        ("1w", .seconds(7 * 86_400)),
        ("1y", .seconds(365 * 86_400)),
        ("1m30s", .seconds(90)),
        ("1h5m", .seconds(3900)),
        ("1s250ms", .milliseconds(1250)),
        ("90s", .seconds(90)),
        ("1y2w3d4h5m6s7ms", .milliseconds(yearTwoWeeksEtc)),
        ("007s", .seconds(7)),
    ]

    @Test("parses Prometheus durations", arguments: valid)
    func parses(text: String, expected: Duration) throws {
        #expect(try Duration(prometheus: text) == expected)
    }

    static let invalid: [(String, String)] = [
        ("", #"invalid duration "": must not be empty"#),
        ("-5s", #"invalid duration "-5s": must not be negative"#),
        ("1.5s", #"invalid duration "1.5s": fractions are not allowed (use a smaller unit, e.g. 1500ms)"#),
        (".5s", #"invalid duration ".5s": fractions are not allowed (use a smaller unit, e.g. 1500ms)"#),
        ("5", #"invalid duration "5": missing unit after 5 (use ms, s, m, h, d, w, y)"#),
        ("1m30", #"invalid duration "1m30": missing unit after 30 (use ms, s, m, h, d, w, y)"#),
        ("5x", #"invalid duration "5x": unknown unit "x" (use ms, s, m, h, d, w, y)"#),
        ("5us", #"invalid duration "5us": unknown unit "us" (use ms, s, m, h, d, w, y)"#),
        ("5 s", #"invalid duration "5 s": unknown unit " s" (use ms, s, m, h, d, w, y)"#),
        ("s", #"invalid duration "s": expected a number before "s""#),
        (" 5s", #"invalid duration " 5s": expected a number before " ""#),
        ("5s1m", #"invalid duration "5s1m": units must go from largest to smallest, each at most once"#),
        ("1s1s", #"invalid duration "1s1s": units must go from largest to smallest, each at most once"#),
        ("300y", #"invalid duration "300y": out of range"#),
        ("99999999999999999999s", #"invalid duration "99999999999999999999s": out of range"#),
    ]

    @Test("rejects invalid durations with a clear message", arguments: invalid)
    func rejects(text: String, message: String) {
        do {
            _ = try Duration(prometheus: text)
            Issue.record("\(text) was accepted")
        } catch {
            #expect(error.description == message)
            #expect(error.text == text)
        }
    }

    static let formatted: [(Duration, String)] = [
        (Duration.zero, "0s"),
        (.milliseconds(250), "250ms"),
        (.seconds(5), "5s"),
        (.seconds(90), "1m30s"),
        (.seconds(3900), "1h5m"),
        (.seconds(86_400), "1d"),
        (.seconds(8 * 86_400), "1w1d"),
        (.seconds(366 * 86_400), "1y1d"),
        (.milliseconds(1250), "1s250ms"),
        (.microseconds(1_499), "1ms"),
        (.microseconds(1_500), "2ms"),
        (.microseconds(400), "0s"),
        (.seconds(-90), "-1m30s"),
    ]

    @Test("formats as Prometheus notation", arguments: formatted)
    func formats(duration: Duration, expected: String) {
        #expect(duration.prometheusString == expected)
    }

    @Test("formatting and parsing round-trip", arguments: ["0s", "1ms", "999ms", "1m1s1ms", "1y1w1d1h1m1s1ms", "2h"])
    func roundTrips(text: String) throws {
        #expect(try Duration(prometheus: text).prometheusString == text)
    }
}
