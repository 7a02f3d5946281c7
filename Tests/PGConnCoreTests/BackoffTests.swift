import Testing

@testable import PGConnCore

@Suite struct BackoffTests {
    @Test func growsByTheMultiplierUpToTheCapWithoutJitter() {
        var backoff = Backoff(config: BackoffConfig(initial: .milliseconds(250), max: .seconds(5), multiplier: 2, jitter: 0), seed: 7)
        let delays = (0..<8).map { _ in backoff.next() }
        #expect(delays == [
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2), .seconds(4), .seconds(5), .seconds(5),
            .seconds(5),
        ])
        #expect(backoff.attempt == 8)
        backoff.reset()
        #expect(backoff.next() == .milliseconds(250))
    }

    @Test func jitterStaysWithinItsBandAndNeverPassesTheCap() {
        let config = BackoffConfig(initial: .seconds(1), max: .seconds(4), multiplier: 2, jitter: 0.2)
        var backoff = Backoff(config: config, seed: 42)
        var seenBelow = false
        var seenAbove = false
        for _ in 0..<2000 {
            backoff.reset()
            let first = backoff.next().seconds
            #expect(first >= 0.8 && first <= 1.2)
            seenBelow = seenBelow || first < 0.95
            seenAbove = seenAbove || first > 1.05
            for _ in 0..<5 { #expect(backoff.next() <= .seconds(4)) }
        }
        #expect(seenBelow && seenAbove, "jitter spreads both ways")
    }

    @Test func theSameSeedGivesTheSameDelaysAndOtherSeedsDiffer() {
        let config = BackoffConfig.default
        var a = Backoff(config: config, seed: 1)
        var b = Backoff(config: config, seed: 1)
        var c = Backoff(config: config, seed: 2)
        let first = (0..<5).map { _ in a.next() }
        #expect(first == (0..<5).map { _ in b.next() })
        #expect(first != (0..<5).map { _ in c.next() })
    }

    @Test func aHugeNumberOfFailuresDoesNotOverflow() {
        var backoff = Backoff(config: BackoffConfig(initial: .seconds(1), max: .seconds(30), multiplier: 10, jitter: 0), seed: 1)
        for _ in 0..<10_000 { _ = backoff.next() }
        #expect(backoff.next() == .seconds(30))
    }
}
