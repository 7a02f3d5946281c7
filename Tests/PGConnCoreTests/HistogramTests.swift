import Testing

@testable import PGConnCore

/// Bucket placement, the `+Inf` slot, sum and count, and the bucket layouts the exporter ships.
@Suite struct HistogramTests {
    static let bounds: [Double] = [0.01, 0.1, 1]

    @Test func startsEmptyWithOneSlotPerBoundPlusInf() {
        let histogram = Histogram(bounds: Self.bounds)
        #expect(histogram.counts == [0, 0, 0, 0])
        #expect(histogram.sum == 0)
        #expect(histogram.count == 0)
    }

    /// `counts[i]` holds (bounds[i-1], bounds[i]]: a value equal to a bound belongs to that bound's bucket.
    @Test(
        "a value lands in the first bucket whose bound is >= it",
        arguments: [
            (0, 0), (-1, 0), (0.005, 0), (0.01, 0),
            (0.010_000_1, 1), (0.1, 1),
            (0.5, 2), (1, 2),
            (1.000_001, 3), (1e9, 3), (Double.infinity, 3),
        ] as [(Double, Int)])
    func bucketPlacement(value: Double, slot: Int) {
        var histogram = Histogram(bounds: Self.bounds)
        histogram.observe(value)
        var expected: [UInt64] = [0, 0, 0, 0]
        expected[slot] = 1
        #expect(histogram.counts == expected)
        #expect(histogram.count == 1)
        #expect(histogram.sum == value)
    }

    @Test func sumAndCountAccumulate() {
        var histogram = Histogram(bounds: Self.bounds)
        for value in [0.25, 0.5, 2, 4, 0.0078125] { histogram.observe(value) }
        #expect(histogram.counts == [1, 0, 2, 2])
        #expect(histogram.count == 5)
        #expect(histogram.sum == 6.7578125, "binary fractions, so the sum is exact")
        #expect(histogram.counts.reduce(0, +) == histogram.count, "every observation is in exactly one slot")
    }

    @Test func equalityComparesBoundsAndCounts() {
        var a = Histogram(bounds: Self.bounds)
        var b = Histogram(bounds: Self.bounds)
        #expect(a == b)
        a.observe(0.5)
        #expect(a != b)
        b.observe(0.5)
        #expect(a == b)
        #expect(Histogram(bounds: [1]) != Histogram(bounds: [2]))
    }

    @Test(
        "shipped bucket layouts are strictly ascending, finite and positive",
        arguments: [
            ("probe", Histogram.probeBounds), ("connect", Histogram.connectBounds),
            ("outage", Histogram.outageBounds), ("loopLag", Histogram.loopLagBounds),
        ])
    func shippedBounds(name: String, bounds: [Double]) {
        #expect(!bounds.isEmpty, "\(name)")
        #expect(bounds.allSatisfy { $0.isFinite && $0 > 0 }, "\(name)")
        #expect(zip(bounds, bounds.dropFirst()).allSatisfy { $0 < $1 }, "\(name)")
    }

    /// The layouts are part of the metric contract (docs/metrics.md lists them and the series count depends on
    /// them): changing one is a deliberate change of that page.
    @Test func shippedBoundsAreTheDocumentedOnes() {
        #expect(Histogram.probeBounds == [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5])
        #expect(Histogram.connectBounds == [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5])
        #expect(Histogram.outageBounds == [1, 5, 10, 30, 60, 300, 900, 3600])
        #expect(Histogram.loopLagBounds == [0.0001, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 1])
        #expect(Histogram.probeCoarseBounds == [0.005, 0.025, 0.1, 1])
        #expect(Histogram.connectCoarseBounds == [0.025, 0.1, 0.5, 2.5])
        #expect(Histogram.outageCoarseBounds == [10, 60, 300, 3600])
        for (coarse, full) in [
            (Histogram.probeCoarseBounds, Histogram.probeBounds),
            (Histogram.connectCoarseBounds, Histogram.connectBounds),
            (Histogram.outageCoarseBounds, Histogram.outageBounds),
        ] {
            #expect(Set(coarse).isSubset(of: full), "a coarse bound must be a full one, or its count is not exact")
        }
    }

    @Test func coarseningKeepsTheCumulativeCountsAtTheKeptBounds() {
        var fine = Histogram(bounds: [1, 2, 3, 4, 5])
        for value in [0.5, 1, 1.5, 2.5, 3, 3.5, 4.5, 6, 7] { fine.observe(value) }
        let coarse = fine.coarsened(to: [2, 4])
        #expect(coarse.bounds == [2, 4])
        #expect(coarse.counts == [3, 3, 3])
        #expect(coarse.sum == fine.sum)
        #expect(coarse.count == fine.count)
    }
}
