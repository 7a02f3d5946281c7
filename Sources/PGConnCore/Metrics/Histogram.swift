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

    /// Bucket bounds for round trips on a session: 1ms to 2.5s.
    public static let probeBounds: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5]
    /// Bucket bounds for establishing a connection (TCP, TLS, auth): 5ms to 5s.
    public static let connectBounds: [Double] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
    /// Bucket bounds for outages: 1s to 1h.
    public static let outageBounds: [Double] = [1, 5, 10, 30, 60, 300, 900, 3600]
    /// Bucket bounds for the I/O loop's timer lateness: 100µs to 1s.
    public static let loopLagBounds: [Double] = [0.0001, 0.001, 0.01, 0.1, 1]
}
