import Testing

@testable import PGConnCore

@Suite struct FailureLogStateTests {
    func at(_ seconds: Double) -> MonotonicInstant { MonotonicInstant(nanoseconds: Int64(seconds * 1e9)) }
    let refused = Failure(reason: .refused, message: "Connection refused")
    let auth = Failure(reason: .auth, sqlstate: "28P01", message: "password authentication failed")

    @Test func aRepeatedFailureIsLoggedOnceThenSummarised() {
        var log = FailureLogState()
        #expect(log.failed(refused, now: at(0)) == .log)
        for second in 1..<300 { #expect(log.failed(refused, now: at(Double(second))) == .suppress) }
        #expect(log.repeats == 299)
        #expect(log.failed(refused, now: at(300)) == .summary(repeats: 300))
        #expect(log.failed(refused, now: at(301)) == .suppress)
        #expect(log.succeeded() == 301, "the recovery line says how often it failed")
        #expect(!log.isFailing)
        #expect(log.failed(refused, now: at(302)) == .log, "a new streak is logged again")
    }

    @Test func aDifferentFailureIsLoggedAtOnce() {
        var log = FailureLogState()
        #expect(log.failed(refused, now: at(0)) == .log)
        #expect(log.failed(refused, now: at(1)) == .suppress)
        #expect(log.failed(auth, now: at(2)) == .log)
        #expect(log.failed(refused, now: at(3)) == .log)
    }
}
