/// Reconnect delays that grow exponentially, capped, with jitter.
///
/// The n-th consecutive failure (n = 0, 1, ...) waits
///
///     nominal(n) = min(max, initial × multiplierⁿ)
///     delay(n)   = min(max, nominal(n) × (1 + jitter × (2u − 1)))      u uniform in [0, 1)
///
/// so with the defaults (250ms, ×2, max 5s, jitter 0.2) the waits are about 250ms, 500ms, 1s, 2s, 4s, 5s, 5s...
/// each spread ±20% so that many targets failing together (a shared network, a restarted server) do not
/// reconnect in lockstep. A success calls ``reset()``. The random source is injected for tests.
public struct Backoff: Sendable {
    public let config: BackoffConfig
    /// Failures since the last reset.
    public private(set) var attempt: Int = 0
    private var random: SplitMix64

    public init(config: BackoffConfig, seed: UInt64) {
        self.config = config
        self.random = SplitMix64(seed: seed)
    }

    /// The nominal (unjittered) delay for the current attempt.
    public var nominal: Duration {
        let cap = config.max.seconds
        var seconds = config.initial.seconds
        // Multiply step by step and stop at the cap: no overflow however long the outage.
        var step = 0
        while step < attempt && seconds < cap {
            seconds *= config.multiplier
            step += 1
        }
        return .nanoseconds(Int64(min(cap, seconds) * 1e9))
    }

    /// Returns the delay before the next attempt and counts the failure.
    public mutating func next() -> Duration {
        let nominal = self.nominal.seconds
        let unit = random.nextUnit()
        let jittered = nominal * (1 + config.jitter * (2 * unit - 1))
        attempt += 1
        let capped = max(0, min(config.max.seconds, jittered))
        return .nanoseconds(Int64(capped * 1e9))
    }

    /// Forgets past failures after a success.
    public mutating func reset() { attempt = 0 }
}

/// A small, fast, seedable generator (Steele, Lea and Flood's SplitMix64).
///
/// Enough for jitter; seeded per target so that tests are reproducible and targets do not share a sequence.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform value in [0, 1).
    public mutating func nextUnit() -> Double {
        Double(next() >> 11) * 0x1.0p-53
    }
}
