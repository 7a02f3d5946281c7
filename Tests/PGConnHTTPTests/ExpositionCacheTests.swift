import Foundation
import Synchronization
import Testing

@testable import PGConnCore
@testable import PGConnHTTP

/// `/metrics` from ready bytes: pages rendered off the request path, served while young, rendered at once after
/// a rare change.
struct ExpositionCacheTests {
    final class World: Sendable {
        let generation = Atomic<UInt64>(0)
        let rare = Atomic<UInt64>(0)
        let clock = Atomic<Int64>(1_000_000_000)
        /// How far a render moves the fake clock: its cost.
        let renderCost = Atomic<Int64>(0)
        let renders = Atomic<Int>(0)

        func cache(refreshes: Bool = false, policy: ExpositionCache.RefreshPolicy = .init()) -> ExpositionCache {
            ExpositionCache(
                policy: policy, refreshes: refreshes,
                generation: {
                    ExpositionCache.Generation(
                        all: self.generation.load(ordering: .relaxed), rare: self.rare.load(ordering: .relaxed))
                },
                now: {
                    refreshes
                        ? monotonicNow() : MonotonicInstant(nanoseconds: self.clock.load(ordering: .relaxed))
                },
                render: {
                    let count = self.renders.wrappingAdd(1, ordering: .relaxed).newValue
                    self.clock.wrappingAdd(self.renderCost.load(ordering: .relaxed), ordering: .relaxed)
                    return Array(String(repeating: "pgconn_up{target=\"a\"} 1\n", count: 50 + count).utf8)
                })
        }

        func advance(_ duration: Duration) { clock.wrappingAdd(duration.nanoseconds, ordering: .relaxed) }
        var renderCount: Int { renders.load(ordering: .relaxed) }
    }

    @Test func aPageIsServedWhileYoungEvenIfTheStoreChanged() {
        let world = World()
        let cache = world.cache()
        let first = cache.body(gzip: false)
        world.generation.wrappingAdd(1, ordering: .relaxed)
        world.advance(.milliseconds(199))
        #expect(cache.body(gzip: false).bytes === first.bytes, "younger than maxAge (100 ms pause + 100 ms)")
        #expect(world.renderCount == 1)
        world.advance(.milliseconds(1))
        _ = cache.body(gzip: false)
        #expect(world.renderCount == 2, "older than maxAge: rendered again")
    }

    @Test func aRareChangeIsRenderedAtOnce() {
        let world = World()
        let cache = world.cache()
        _ = cache.body(gzip: false)
        world.rare.wrappingAdd(1, ordering: .relaxed)
        _ = cache.body(gzip: false)
        #expect(world.renderCount == 2, "a reload's outcome is never behind its answer")
        _ = cache.body(gzip: false)
        #expect(world.renderCount == 2)
    }

    @Test func theAgeAPageMayHaveGrowsWithItsCost() {
        let policy = ExpositionCache.RefreshPolicy()
        #expect(policy.interval(cost: .microseconds(200)) == .milliseconds(100), "the minimum pause")
        #expect(policy.interval(cost: .milliseconds(27)) == .milliseconds(270), "ten times the cost")
        #expect(policy.interval(cost: .milliseconds(400)) == .seconds(4), "ten times the cost")
        #expect(policy.interval(cost: .milliseconds(900)) == .seconds(5), "the maximum pause")
        let world = World()
        world.renderCost.store(Duration.milliseconds(50).nanoseconds, ordering: .relaxed)
        let cache = world.cache()
        _ = cache.body(gzip: false)
        world.advance(.milliseconds(640))  // maxAge = 500 + 2 x 50 + 100 from the render's start; 50 passed in it
        _ = cache.body(gzip: false)
        #expect(world.renderCount == 1)
        world.advance(.milliseconds(10))
        _ = cache.body(gzip: false)
        #expect(world.renderCount == 2)
    }

    /// The refresher renders without a request while requests keep coming, and gzips when they asked for it.
    @Test func theRefresherRendersAheadOfTheRequests() throws {
        let world = World()
        var policy = ExpositionCache.RefreshPolicy()
        policy.backgroundFrom = .zero  // the fake renders cost nothing
        let cache = world.cache(refreshes: true, policy: policy)
        _ = cache.body(gzip: true)
        #expect(world.renderCount == 1)
        world.generation.wrappingAdd(1, ordering: .relaxed)
        let deadline = ContinuousClock.now + .seconds(10)
        while world.renderCount < 2 && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.01) }
        #expect(world.renderCount == 2, "rendered by the refresher, after the store changed")
        let page = cache.body(gzip: true)
        #expect(page.gzipped && world.renderCount == 2, "served the refresher's page and its gzip")
    }

    /// A page cheaper than `backgroundFrom` is left to the requests: nothing renders between them, and a request
    /// that finds the page too old renders a fresh one itself.
    @Test func cheapPagesAreRenderedByTheRequestsOnly() throws {
        let world = World()
        let cache = world.cache(refreshes: true)
        _ = cache.body(gzip: false)
        #expect(world.renderCount == 1)
        world.generation.wrappingAdd(1, ordering: .relaxed)
        // Nothing to await: the refresher would have rendered within its 100 ms pause; give it three.
        Thread.sleep(forTimeInterval: 0.3)
        #expect(world.renderCount == 1, "no render without a request")
        _ = cache.body(gzip: false)
        #expect(world.renderCount == 2, "the request found the page too old and rendered it")
    }

    @Test func theGzipOfAPageIsMadeOnceAndMatchesIt() throws {
        let world = World()
        let cache = world.cache()
        let zipped = cache.body(gzip: true)
        #expect(zipped.gzipped)
        let again = cache.body(gzip: true)
        #expect(again.bytes === zipped.bytes && world.renders.load(ordering: .relaxed) == 1)
        #expect(zipped.bytes.count < cache.body(gzip: false).bytes.count)
        #expect(zipped.bytes.bytes.starts(with: [0x1f, 0x8b]), "a gzip member")
    }

    @Test func theStoreCountsItsChanges() {
        let store = MetricsStore(
            buildInfo: BuildInfo(version: "t", revision: "t", libpqVersion: "-", microhttpdVersion: "-"))
        let start = store.generation
        _ = store.render(wallClock: 0, now: .init(nanoseconds: 0), process: nil)
        #expect(store.generation == start, "rendering changes nothing")
        store.recordLoopLag(seconds: 0.001)
        #expect(store.generation == start + 1)
        store.setTargets([])
        store.recordProbeRejected()
        #expect(store.generation == start + 3)
        let rare = store.rareGeneration
        store.recordLoopLag(seconds: 0.001)
        #expect(store.rareGeneration == rare, "observations are frequent changes")
        store.recordReload(successful: true, wallClock: 1)
        #expect(store.rareGeneration == rare + 1)
    }
}
