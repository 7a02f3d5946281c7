import Testing

@testable import PGConnCore

/// The text format 0.0.4 as written: number spelling, escaping, sample and histogram lines.
@Suite struct ExpositionWriterTests {
    func text(_ writer: ExpositionWriter) -> String { String(decoding: writer.bytes, as: UTF8.self) }

    @Test(
        "numbers are spelled as Prometheus parses them",
        arguments: [
            (0, "0"), (1, "1"), (-3, "-3"), (42, "42"), (-0.0, "0"),
            (1_700_000_000, "1700000000"), (123_456_789_012_345, "123456789012345"),
            (0.5, "0.5"), (0.001, "0.001"), (0.0001, "0.0001"), (0.000_01, "1e-05"), (1.5e-7, "1.5e-07"),
            (0.1 + 0.2, "0.30000000000000004"), (1_700_000_000.25, "1700000000.25"), (-2.5, "-2.5"),
            (1e15, "1000000000000000.0"), (1e16, "1e+16"), (Double(Int.max), "9.223372036854776e+18"),
            (Double.infinity, "+Inf"), (-Double.infinity, "-Inf"), (Double.nan, "NaN"),
        ] as [(Double, String)])
    func format(value: Double, expected: String) {
        #expect(ExpositionWriter.format(value) == expected)
    }

    @Test(
        "label values escape backslash, double quote and newline only",
        arguments: [
            ("plain", "plain"),
            (#"C:\data"#, #"C:\\data"#),
            (#"say "hi""#, #"say \"hi\""#),
            ("line1\nline2", #"line1\nline2"#),
            ("\\\"\n", #"\\\"\n"#),
            ("tab\tand\rcr", "tab\tand\rcr"),
            ("café ✓", "café ✓"),
            ("", ""),
        ])
    func labelEscaping(value: String, expected: String) {
        #expect(ExpositionWriter.escapeLabelValue(value) == expected)
    }

    @Test(
        "HELP escapes backslash and newline but not quotes",
        arguments: [
            ("Plain help.", "Plain help."),
            (#"a\b"#, #"a\\b"#),
            ("two\nlines", #"two\nlines"#),
            (#"the "session's" probe"#, #"the "session's" probe"#),
        ])
    func helpEscaping(help: String, expected: String) {
        #expect(ExpositionWriter.escapeHelp(help) == expected)
        var writer = ExpositionWriter()
        writer.family("x_total", .counter, help: help)
        #expect(text(writer) == "# HELP x_total \(expected)\n# TYPE x_total counter\n")
    }

    @Test func familyTypesAreSpelledLowercase() {
        var writer = ExpositionWriter()
        writer.family("a", .counter, help: "A.")
        writer.family("b", .gauge, help: "B.")
        writer.family("c", .histogram, help: "C.")
        #expect(
            text(writer)
                == "# HELP a A.\n# TYPE a counter\n# HELP b B.\n# TYPE b gauge\n# HELP c C.\n# TYPE c histogram\n")
    }

    @Test func samplesWithAndWithoutLabels() {
        var writer = ExpositionWriter()
        writer.sample("pgconn_up", [], 1.0)
        writer.sample("pgconn_up", [("target", "primary")], 0.0)
        writer.sample("pgconn_probes_total", [("target", "a"), ("reason", "auth")], UInt64(7))
        writer.sample("big_total", [], UInt64.max)
        writer.sample("ts_seconds", [("target", #"we\ird "n"ame"#)], 1_700_000_000.5)
        #expect(
            text(writer) == """
                pgconn_up 1
                pgconn_up{target="primary"} 0
                pgconn_probes_total{target="a",reason="auth"} 7
                big_total 18446744073709551615
                ts_seconds{target="we\\\\ird \\"n\\"ame"} 1700000000.5

                """)
    }

    @Test func histogramLinesAreCumulativeWithLeAndInf() {
        var histogram = Histogram(bounds: [0.005, 0.5, 1])
        for value in [0.25, 1, 3, 0.5] { histogram.observe(value) }
        var writer = ExpositionWriter()
        writer.histogram("x_seconds", [("target", "a")], histogram)
        #expect(
            text(writer) == """
                x_seconds_bucket{target="a",le="0.005"} 0
                x_seconds_bucket{target="a",le="0.5"} 2
                x_seconds_bucket{target="a",le="1"} 3
                x_seconds_bucket{target="a",le="+Inf"} 4
                x_seconds_sum{target="a"} 4.75
                x_seconds_count{target="a"} 4

                """)
    }

    @Test func emptyHistogramWithoutLabels() {
        var writer = ExpositionWriter()
        writer.histogram("lag_seconds", [], Histogram(bounds: [0.0001, 1]))
        #expect(
            text(writer) == """
                lag_seconds_bucket{le="0.0001"} 0
                lag_seconds_bucket{le="1"} 0
                lag_seconds_bucket{le="+Inf"} 0
                lag_seconds_sum 0
                lag_seconds_count 0

                """)
    }

    @Test func bytesAccumulateInCallOrder() {
        var writer = ExpositionWriter(reservingCapacity: 0)
        #expect(writer.bytes.isEmpty)
        writer.family("g", .gauge, help: "G.")
        writer.sample("g", [], 2.0)
        #expect(text(writer) == "# HELP g G.\n# TYPE g gauge\ng 2\n")
        #expect(writer.bytes == Array("# HELP g G.\n# TYPE g gauge\ng 2\n".utf8))
    }
}
