import Testing

@testable import PGConnHTTP

/// Suspends a request, requiring a ticket (the server is not stopping).
private func suspend(_ requests: inout SuspendedRequests<String>, _ connection: String) throws -> UInt64 {
    let ticket = requests.suspend(connection)
    return try #require(ticket)
}

/// `#expect` cannot call a mutating method, so each event is applied here and its result compared after.
@Suite struct SuspendedRequestsTests {
    let ok = HTTPResponse.text("ok\n")

    @Test func anAnswerResumesTheWaitingConnectionOnceAndIsTakenOnce() throws {
        var requests = SuspendedRequests<String>()
        let ticket = try suspend(&requests, "a")
        let resumed = requests.answer(ticket, with: ok)
        let resumedAgain = requests.answer(ticket, with: .text("second\n"))
        #expect(resumed == "a")
        #expect(resumedAgain == nil)  // the second respond is ignored

        let taken = requests.take(ticket)
        let takenAgain = requests.take(ticket)
        let resumedAfterTake = requests.answer(ticket, with: ok)
        #expect(taken?.body == ok.body)
        #expect(takenAgain == nil)
        #expect(resumedAfterTake == nil)
        #expect(requests.count == 1)  // until libmicrohttpd reports it completed

        let lastWhileStopping = requests.completed(ticket)
        let resumedAfterCompletion = requests.answer(ticket, with: ok)
        #expect(lastWhileStopping == false)
        #expect(requests.count == 0)
        #expect(resumedAfterCompletion == nil)
    }

    @Test func ticketsAreNotReusedSoALateAnswerCannotResumeTheNextRequestOnTheSameConnection() throws {
        var requests = SuspendedRequests<String>()
        let first = try suspend(&requests, "keep-alive")
        _ = requests.answer(first, with: ok)
        _ = requests.take(first)
        _ = requests.completed(first)
        let second = try suspend(&requests, "keep-alive")
        let late = requests.answer(first, with: .text("late\n"))
        let own = requests.answer(second, with: ok)
        #expect(second != first)
        #expect(late == nil)
        #expect(own == "keep-alive")
    }

    @Test func aRequestCompletedWhileWaitingIsForgotten() throws {
        var requests = SuspendedRequests<String>()
        let ticket = try suspend(&requests, "a")
        let last = requests.completed(ticket)
        let resumed = requests.answer(ticket, with: ok)
        #expect(last == false)
        #expect(resumed == nil)
        #expect(requests.count == 0)
    }

    @Test func stopAnswersOnlyTheWaitingOnesAndRefusesEverythingAfter() throws {
        var requests = SuspendedRequests<String>()
        let waiting = try suspend(&requests, "waiting")
        let answered = try suspend(&requests, "answered")
        let sending = try suspend(&requests, "sending")
        _ = requests.answer(answered, with: ok)
        _ = requests.answer(sending, with: ok)
        _ = requests.take(sending)

        let resumed = requests.stop(answering: .text("shutting down\n", status: 503))
        #expect(resumed == ["waiting"])
        #expect(requests.isStopping)

        let suspendedAfterStop = requests.suspend("new")
        let resumedAfterStop = requests.answer(waiting, with: ok)
        let waitingTakes = requests.take(waiting)
        let answeredTakes = requests.take(answered)
        #expect(suspendedAfterStop == nil)
        #expect(resumedAfterStop == nil)  // a respond after stop
        #expect(waitingTakes?.status == 503)
        #expect(answeredTakes?.status == 200)  // its own answer was already on its way
        #expect(requests.count == 3)

        let completions = [waiting, answered, sending, sending].map { requests.completed($0) }
        #expect(completions == [false, false, true, false])  // the last one ends the drain, once
    }

    @Test func stopWithNothingDeferredHasNothingToResume() {
        var requests = SuspendedRequests<String>()
        let resumed = requests.stop(answering: ok)
        #expect(resumed.isEmpty)
        #expect(requests.count == 0)
    }
}
