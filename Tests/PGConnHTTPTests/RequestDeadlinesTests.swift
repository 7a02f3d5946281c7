import PGConnCore
import Testing

@testable import PGConnHTTP

@Suite struct RequestDeadlinesTests {
    let start = MonotonicInstant(nanoseconds: 1_000_000_000)

    @Test func aRequestNotInByTheDeadlineHasItsSocketReturnedOnce() {
        var deadlines = RequestDeadlines<Int>(limit: .seconds(10))
        deadlines.opened(1, socket: 7, now: start)
        deadlines.opened(2, socket: 8, now: start + .seconds(5))
        #expect(deadlines.expire(now: start + .milliseconds(9_999)) == [])
        #expect(deadlines.expire(now: start + .seconds(10)) == [7])
        #expect(deadlines.expire(now: start + .seconds(11)) == [])
        #expect(deadlines.expire(now: start + .seconds(15)) == [8])
        #expect(deadlines.count == 2)  // forgotten only when closed
    }

    @Test func answeringClearsTheDeadlineAndCompletionStartsTheNextOne() {
        var deadlines = RequestDeadlines<Int>(limit: .seconds(10))
        deadlines.opened(1, socket: 7, now: start)
        deadlines.answering(1)
        #expect(deadlines.expire(now: start + .seconds(60)) == [])
        deadlines.completed(1, now: start + .seconds(60))
        #expect(deadlines.expire(now: start + .seconds(69)) == [])
        #expect(deadlines.expire(now: start + .seconds(70)) == [7])
    }

    @Test func closedConnectionsAreForgottenAndStayForgotten() {
        var deadlines = RequestDeadlines<Int>(limit: .seconds(10))
        deadlines.opened(1, socket: 7, now: start)
        deadlines.closed(1)
        deadlines.completed(1, now: start)  // a late completion must not bring it back
        #expect(deadlines.count == 0)
        #expect(deadlines.expire(now: start + .seconds(60)) == [])
    }
}
