/// Decides which failures of one target reach the log, so a target failing the same way every few seconds
/// writes one line when the failure starts, a summary every ``summaryInterval``, and one when it ends, not a
/// line per attempt (200 failing targets once wrote 17k lines in 100 s).
///
/// Failures are the same when reason, SQLSTATE and message are; a different failure is logged at once.
public struct FailureLogState: Sendable, Equatable {
    public enum Decision: Equatable, Sendable {
        /// A new failure: log it.
        case log
        /// The same failure again within the summary interval: do not log it.
        case suppress
        /// The same failure, and the summary interval has passed: log it with the number of repeats since.
        case summary(repeats: Int)
    }

    public static let summaryInterval: Duration = .seconds(300)

    private var current: Failure?
    private var lastLogged: MonotonicInstant = .zero
    /// Repeats not logged since the last line.
    public private(set) var repeats = 0
    /// Repeats in the whole failure streak.
    public private(set) var streak = 0

    public init() {}

    /// Whether the target is in a streak of failures.
    public var isFailing: Bool { current != nil }

    /// Records a failure and says whether to log it.
    public mutating func failed(_ failure: Failure, now: MonotonicInstant) -> Decision {
        guard failure == current else {
            current = failure
            lastLogged = now
            repeats = 0
            streak = 0
            return .log
        }
        streak += 1
        guard now - lastLogged >= Self.summaryInterval else {
            repeats += 1
            return .suppress
        }
        defer {
            repeats = 0
            lastLogged = now
        }
        return .summary(repeats: repeats + 1)
    }

    /// The target succeeded: ends the streak and returns how many repeats it had (0 when it had none).
    public mutating func succeeded() -> Int {
        defer {
            current = nil
            repeats = 0
            streak = 0
        }
        return streak
    }
}
