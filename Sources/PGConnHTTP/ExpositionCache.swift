import PGConnCore
import Synchronization

/// `/metrics` from ready bytes: a rendered page (and its gzip) is served again while the store has not changed
/// and the page is younger than ``maxAge``, so scrapes in a burst (several Prometheus servers, a benchmark)
/// cost a copy, not a render and a compression each.
///
/// The age bound is for what is computed at render time rather than recorded: staleness (`pgconn_up` turns 0 when
/// the last success is too old, without any new event), the loop's overdue gauge and the process stats; they are
/// at most ``maxAge`` old. One render at a time: a scrape arriving during a render waits for it and takes its
/// page.
final class ExpositionCache: Sendable {
    private struct Page {
        var generation: UInt64
        var rendered: MonotonicInstant
        var plain: [UInt8]
        var gzipped: [UInt8]?
    }

    static let defaultMaxAge: Duration = .milliseconds(250)

    let maxAge: Duration
    private let generation: @Sendable () -> UInt64
    private let render: @Sendable () -> [UInt8]
    private let now: @Sendable () -> MonotonicInstant
    private let page = Mutex<Page?>(nil)

    init(
        maxAge: Duration = ExpositionCache.defaultMaxAge, generation: @escaping @Sendable () -> UInt64,
        now: @escaping @Sendable () -> MonotonicInstant = monotonicNow, render: @escaping @Sendable () -> [UInt8]
    ) {
        self.maxAge = maxAge
        self.generation = generation
        self.now = now
        self.render = render
    }

    /// The page as plain text, or gzipped when `gzip` is asked and compression worked (`gzipped` says which).
    func body(gzip: Bool) -> (bytes: [UInt8], gzipped: Bool) {
        page.withLock { page in
            let current = generation()
            let time = now()
            var served: Page
            if let cached = page, cached.generation == current, time - cached.rendered < maxAge {
                served = cached
            } else {
                served = Page(generation: current, rendered: time, plain: render(), gzipped: nil)
            }
            defer { page = served }
            guard gzip else { return (served.plain, false) }
            if served.gzipped == nil { served.gzipped = Gzip.compress(served.plain) }
            return served.gzipped.map { ($0, true) } ?? (served.plain, false)
        }
    }
}
