/// A Prometheus histogram's state: cumulative on output, per-bucket counts inside.
///
/// A plain value so a target's series can be copied out of the lock and rendered without holding it.
public struct Histogram: Sendable, Equatable {
    /// Upper bounds in seconds, ascending; `+Inf` is implicit.
    public let bounds: [Double]
    /// `counts[i]` holds observations in (bounds[i-1], bounds[i]]; the last slot holds those above every bound.
    public private(set) var counts: [UInt64]
    public private(set) var sum: Double = 0
    public private(set) var count: UInt64 = 0

    public init(bounds: [Double]) {
        self.bounds = bounds
        self.counts = Array(repeating: 0, count: bounds.count + 1)
    }

    public mutating func observe(_ value: Double) {
        let index = bounds.firstIndex(where: { value <= $0 }) ?? bounds.count
        counts[index] += 1
        sum += value
        count += 1
    }

    /// The same observations in fewer buckets. `bounds` must be a subset of ``bounds`` (a coarse bucket takes
    /// the fine buckets up to its bound), so the cumulative counts at the kept bounds stay exact.
    public func coarsened(to bounds: [Double]) -> Histogram {
        var coarse = Histogram(bounds: bounds)
        var slot = 0
        for (index, count) in counts.enumerated() {
            let upper = index < self.bounds.count ? self.bounds[index] : .infinity
            while slot < bounds.count && bounds[slot] < upper { slot += 1 }
            coarse.counts[slot] += count
        }
        coarse.sum = sum
        coarse.count = count
        return coarse
    }

    /// Bucket bounds for round trips on a session: 1ms to 2.5s.
    public static let probeBounds: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
    /// Bucket bounds for establishing a connection (TCP, TLS, auth): 5ms to 5s.
    public static let connectBounds: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
    /// Bucket bounds for outages: 1s to 1h.
    public static let outageBounds: [Double] = [1, 5, 10, 30, 60, 300, 900, 3600]
    /// Bucket bounds for failovers (first failure to a session in the right role on another server): 1s to
    /// 10 min; a failover managed by Patroni or a cloud service takes seconds to a minute.
    public static let failoverBounds: [Double] = [1, 2.5, 5, 10, 30, 60, 120, 600]
    /// Bucket bounds for the I/O loop's timer lateness: 100µs to 1s, finer around the 20 ms goal.
    public static let loopLagBounds: [Double] = [0.0001, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 1]

    /// The 4 buckets of `metrics: {histograms: coarse}`, each a subset of the full bounds above: enough to
    /// tell healthy from slow from failing, and for a rough `histogram_quantile`.
    public static let probeCoarseBounds: [Double] = [0.005, 0.025, 0.1, 1]
    public static let connectCoarseBounds: [Double] = [0.025, 0.1, 0.5, 2.5]
    public static let outageCoarseBounds: [Double] = [10, 60, 300, 3600]
    public static let failoverCoarseBounds: [Double] = [5, 30, 120, 600]
}
