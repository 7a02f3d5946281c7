import Dispatch
import PGConnCore
import PGConnSync
import Synchronization

/// `/metrics` from ready bytes: the page (and its gzip) is rendered off the request path while scrapes come,
/// and a scrape copies the latest one out.
///
/// A render costs time in proportion to the series (about 27 ms for 1,000 targets), and a gzip as much again.
/// So while requests keep coming, a refresher on a dispatch queue renders the page again after a pause of
/// ``RefreshPolicy/pauseFactor`` times the last render's cost, its gzip included (within
/// ``RefreshPolicy/minimumInterval`` and ``RefreshPolicy/maximumInterval``), which bounds the CPU it takes to a
/// tenth of a core up to a cost of half a second (about 5,000 targets with every series), and gzips it when recent
/// requests asked for gzip. A scrape serves that page if it is
/// younger than ``RefreshPolicy/maxAge(cost:)``, the most a page can age while the refresher runs. The values
/// it shows are then that old at most: recorded observations, and what is computed at render time (staleness,
/// the loop's overdue gauge, process stats).
///
/// Three cases render on the request path instead: a page is cheap (``RefreshPolicy/backgroundFrom``: a small
/// fleet's page costs about a millisecond, less than the refresher would spend rendering pages nobody asks for),
/// the refresher is idle (no request for
/// ``RefreshPolicy/idleAfter``, so an exporter nobody scrapes spends nothing on pages), and a rare change
/// (``Generation/rare``: a reload, a new target set, a refused probe) happened since the page was rendered, so
/// an answer that a reload is done is never followed by a page from before it. One render at a time: a
/// request that needs one while another runs waits for it and takes its page.
final class ExpositionCache: Sendable {
    /// The store's change counters (``MetricsStore/generation``, ``MetricsStore/rareGeneration``).
    struct Generation: Equatable, Sendable {
        var all: UInt64
        var rare: UInt64
    }

    /// When a page may be served and when the next is rendered.
    struct RefreshPolicy: Sendable {
        /// The pause after a render, in multiples of its cost: 10 caps rendering at a tenth of a core.
        var pauseFactor: Int64 = 10
        var minimumInterval: Duration = .milliseconds(100)
        /// Reached at a cost of 0.5 s (about 5,000 targets with every series, gzip included): a page is then up to
        /// about 6 s old, against scrape intervals of 15 s and more.
        var maximumInterval: Duration = .seconds(5)
        /// Without a request for this long the refresher stops; the next request renders and restarts it.
        var idleAfter: Duration = .seconds(300)
        /// Pages that cost less than this (gzip included) are rendered by the request that finds the page too
        /// old, and the refresher stops: at 10 targets it would otherwise render ten times a second (2 % of a
        /// core) for a Prometheus that scrapes every 15 s, while a render on the request path adds about a
        /// millisecond. Under a burst of requests the page is still reused while younger than ``maxAge(cost:)``.
        var backgroundFrom: Duration = .milliseconds(5)

        /// The pause between renders after one that took `cost`.
        func interval(cost: Duration) -> Duration {
            min(maximumInterval, max(minimumInterval, cost * pauseFactor))
        }

        /// How old a page rendered in `cost` may be when served: the most it ages while the refresher runs (its
        /// own render, the pause, the next render) and 100 ms to spare.
        func maxAge(cost: Duration) -> Duration { interval(cost: cost) + cost * 2 + .milliseconds(100) }
    }

    private struct Page {
        var generation: Generation
        var rendered: MonotonicInstant
        var cost: Duration
        var plain: SharedBytes
        var gzipped: SharedBytes?
    }

    private struct Demand {
        var lastRequest: MonotonicInstant?
        var lastGzipRequest: MonotonicInstant?
        /// A refresh is queued on `queue`.
        var scheduled = false
    }

    let policy: RefreshPolicy
    private let generation: @Sendable () -> Generation
    private let render: @Sendable () -> [UInt8]
    private let now: @Sendable () -> MonotonicInstant
    private let refreshes: Bool
    private let page = Lock<Page?>(nil)
    /// Held for the length of a render, so there is one at a time; `page` is only held to copy it.
    private let rendering = Lock<Int>(0)
    private let demand = Lock(Demand())
    private let queue = DispatchQueue(label: "pgconn.exposition-refresh")

    /// - Parameters:
    ///   - refreshes: false leaves every render to requests (for tests with a fake clock).
    init(
        policy: RefreshPolicy = RefreshPolicy(), refreshes: Bool = true,
        generation: @escaping @Sendable () -> Generation,
        now: @escaping @Sendable () -> MonotonicInstant = monotonicNow, render: @escaping @Sendable () -> [UInt8]
    ) {
        self.policy = policy
        self.refreshes = refreshes
        self.generation = generation
        self.now = now
        self.render = render
    }

    /// Pages rendered so far (by requests and the refresher).
    var renders: Int { rendering.withLock { $0 } }

    /// The page as plain text, or gzipped when `gzip` is asked and compression worked (`gzipped` says which).
    func body(gzip: Bool) -> (bytes: SharedBytes, gzipped: Bool) {
        let time = now()
        noteRequest(at: time, gzip: gzip)
        let current = generation()
        let served =
            if let cached = page.withLock({ $0 }), serves(cached, current: current, at: time) {
                cached
            } else {
                renderPage(current: current, gzip: false) { self.serves($0, current: current, at: time) }
            }
        guard gzip else { return (served.plain, false) }
        if let gzipped = served.gzipped { return (gzipped, true) }
        guard let compressed = served.plain.withUnsafeBytes({ Gzip.compress($0) }) else { return (served.plain, false) }
        let gzipped = SharedBytes(compressed)
        page.withLock { page in
            if page?.plain === served.plain && page?.gzipped == nil { page?.gzipped = gzipped }
        }
        return (gzipped, true)
    }

    /// Whether `page` may answer a request at `time`: nothing rare happened since it, and it is young enough.
    private func serves(_ page: Page, current: Generation, at time: MonotonicInstant) -> Bool {
        page.generation.rare == current.rare && time - page.rendered < policy.maxAge(cost: page.cost)
    }

    /// Renders a page unless `acceptable` finds the one a concurrent render just made good enough.
    private func renderPage(current: Generation, gzip: Bool, acceptable: (Page) -> Bool) -> Page {
        rendering.withLock { count in
            if let cached = page.withLock({ $0 }), acceptable(cached) { return cached }
            // The generation is read before the render: a change during it makes the next page render again.
            let generation = generation()
            let start = now()
            let plain = render()
            var fresh = Page(generation: generation, rendered: start, cost: .zero, plain: SharedBytes(plain))
            if gzip { fresh.gzipped = Gzip.compress(plain).map(SharedBytes.init) }
            // The gzip counts: it costs as much as the render, and a page must not look too old to serve while
            // the refresher is still compressing its successor.
            fresh.cost = now() - start
            count += 1
            page.withLock { $0 = fresh }
            return fresh
        }
    }

    private func noteRequest(at time: MonotonicInstant, gzip: Bool) {
        let cheap = page.withLock { $0.map { $0.cost < policy.backgroundFrom } ?? false }
        let schedule = demand.withLock { demand in
            demand.lastRequest = time
            if gzip { demand.lastGzipRequest = time }
            guard refreshes, !cheap, !demand.scheduled else { return false }
            demand.scheduled = true
            return true
        }
        if schedule { scheduleRefresh(after: policy.minimumInterval) }
    }

    private func scheduleRefresh(after delay: Duration) {
        queue.asyncAfter(deadline: .now() + .nanoseconds(Int(delay.nanoseconds))) { [weak self] in self?.refresh() }
    }

    /// The refresher's turn: render if the page is out of date, then come back after the pause, unless no
    /// request came for ``RefreshPolicy/idleAfter``.
    private func refresh() {
        let time = now()
        let gzip: Bool? = demand.withLock { demand in
            guard let last = demand.lastRequest, time - last < policy.idleAfter else {
                demand.scheduled = false
                return nil
            }
            return demand.lastGzipRequest.map { time - $0 < policy.idleAfter } ?? false
        }
        guard let gzip else { return }
        if let cached = page.withLock({ $0 }), cached.cost < policy.backgroundFrom {
            // Cheap pages are left to the requests (``RefreshPolicy/backgroundFrom``).
            demand.withLock { $0.scheduled = false }
            return
        }
        let current = generation()
        let latest = renderPage(current: current, gzip: gzip) { page in
            // Unchanged and young: nothing to do.
            page.generation == current && time - page.rendered < policy.interval(cost: page.cost)
                && (!gzip || page.gzipped != nil)
        }
        guard latest.cost >= policy.backgroundFrom else {
            demand.withLock { $0.scheduled = false }
            return
        }
        scheduleRefresh(after: policy.interval(cost: latest.cost))
    }
}
