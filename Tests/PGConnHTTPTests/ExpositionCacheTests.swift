import Synchronization
import Testing

@testable import PGConnCore
@testable import PGConnHTTP

/// `/metrics` from ready bytes: rendered again only when the store changed or the page aged.
struct ExpositionCacheTests {
    final class World: Sendable {
        let generation = Atomic<UInt64>(0)
        let clock = Atomic<Int64>(1_000_000_000)
        let renders = Atomic<Int>(0)

        func cache() -> ExpositionCache {
            ExpositionCache(
                maxAge: .milliseconds(250), generation: { self.generation.load(ordering: .relaxed) },
                now: { MonotonicInstant(nanoseconds: self.clock.load(ordering: .relaxed)) },
                render: {
                    let count = self.renders.wrappingAdd(1, ordering: .relaxed).newValue
                    return Array(String(repeating: "pgconn_up{target=\"a\"} 1\n", count: 50 + count).utf8)
                })
        }

        func advance(_ duration: Duration) { clock.wrappingAdd(duration.nanoseconds, ordering: .relaxed) }
    }

    @Test func aPageIsReusedWhileTheStoreIsUnchangedAndYoung() {
        let world = World()
        let cache = world.cache()
        let first = cache.body(gzip: false)
        world.advance(.milliseconds(249))
        #expect(cache.body(gzip: false).bytes == first.bytes)
        #expect(world.renders.load(ordering: .relaxed) == 1)
        world.advance(.milliseconds(1))
        _ = cache.body(gzip: false)
        #expect(world.renders.load(ordering: .relaxed) == 2, "older than maxAge: rendered again")
        world.generation.wrappingAdd(1, ordering: .relaxed)
        _ = cache.body(gzip: false)
        #expect(world.renders.load(ordering: .relaxed) == 3, "the store changed: rendered again")
    }

    @Test func theGzipOfAPageIsMadeOnceAndMatchesIt() throws {
        let world = World()
        let cache = world.cache()
        let zipped = cache.body(gzip: true)
        #expect(zipped.gzipped)
        let again = cache.body(gzip: true)
        #expect(again.bytes == zipped.bytes && world.renders.load(ordering: .relaxed) == 1)
        #expect(zipped.bytes.count < cache.body(gzip: false).bytes.count)
        #expect(zipped.bytes.starts(with: [0x1f, 0x8b]), "a gzip member")
    }

    @Test func theStoreCountsItsChanges() {
        let store = MetricsStore(buildInfo: BuildInfo(version: "t", revision: "t", libpqVersion: "-", microhttpdVersion: "-"))
        let start = store.generation
        _ = store.render(wallClock: 0, now: .init(nanoseconds: 0), process: nil)
        #expect(store.generation == start, "rendering changes nothing")
        store.recordLoopLag(seconds: 0.001)
        #expect(store.generation == start + 1)
        store.setTargets([])
        store.recordProbeRejected()
        #expect(store.generation == start + 3)
    }
}
