/// Keeps on-demand probes from trying credentials that just failed, so Prometheus probing every 15 s cannot
/// lock an account: after an `auth` or `database_missing` failure, a probed target (by its probe key) is not
/// connected to again for 60 s, doubling to 15 min while it keeps failing, and requests meanwhile get that
/// failure back without a connection. A success, or any other outcome, ends the hold.
///
/// Bounded: at most ``limit`` targets are held; beyond that the hold that ends first is dropped.
public struct ProbeCredentialHold: Sendable {
    public static let limit = 10_000
    static let first: Duration = .seconds(60)
    static let longest: Duration = .seconds(900)

    struct Entry: Sendable {
        var failure: Failure
        var until: MonotonicInstant
        var failures: Int
    }

    private var entries: [String: Entry] = [:]

    public init() {}

    public var count: Int { entries.count }

    /// The failure that holds `key` back and how long the hold lasts, or `nil` when it may be tried.
    public func holding(_ key: String, now: MonotonicInstant) -> (failure: Failure, remaining: Duration)? {
        guard let entry = entries[key], now < entry.until else { return nil }
        return (entry.failure, entry.until - now)
    }

    /// Records how a probe of `key` ended: a credential failure starts or lengthens its hold, anything else ends it.
    public mutating func record(_ key: String, failure: Failure?, now: MonotonicInstant) {
        guard let failure, SessionStateMachine.isCredentialFailure(failure.reason) else {
            entries[key] = nil
            return
        }
        let failures = (entries[key]?.failures ?? 0) + 1
        var delay = Self.first
        for _ in 1..<failures where delay < Self.longest { delay = delay * 2 }
        entries[key] = Entry(failure: failure, until: now + min(delay, Self.longest), failures: failures)
        guard entries.count > Self.limit else { return }
        entries = entries.filter { $0.value.until > now }
        while entries.count > Self.limit, let ending = entries.min(by: { $0.value.until < $1.value.until }) {
            entries[ending.key] = nil
        }
    }
}
