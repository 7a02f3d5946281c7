import Testing

@testable import PGConnCore

@Suite struct ConnectAdmissionTests {
    @Test func admitsUpToTheLimitThenQueuesInOrder() {
        var admission = ConnectAdmission<Int>(limit: 2)
        let asked = [1, 2, 3, 4, 1, 3].map { admission.request($0) }
        #expect(
            asked == [true, true, false, false, true, false],
            "a key already connecting keeps its turn; asking twice queues once")
        #expect(admission.waitingCount == 2)
        let finished = [1, 2, 3].map { admission.finish($0) }
        #expect(finished == [[3], [4], []])
        #expect(admission.inFlight == [4])
    }

    @Test func aWithdrawnKeyLosesItsPlace() {
        var admission = ConnectAdmission<Int>(limit: 1)
        let asked = [1, 2, 3].map { admission.request($0) }
        #expect(asked == [true, false, false])
        let withdrawn = admission.finish(2)
        #expect(withdrawn == [], "2 withdrew while waiting; nothing frees a slot")
        let next = admission.finish(1)
        #expect(next == [3])
        #expect(admission.waitingCount == 0)
    }

    @Test func newcomersWaitBehindTheQueue() {
        var admission = ConnectAdmission<Int>(limit: 1)
        let first = [1, 2].map { admission.request($0) }
        #expect(first == [true, false])
        let afterOne = admission.finish(1)
        #expect(afterOne == [2])
        let late = admission.request(3)
        #expect(!late, "the slot went to 2")
        let afterTwo = admission.finish(2)
        #expect(afterTwo == [3])
    }

    @Test func aLongQueueDrainsCompletely() {
        var admission = ConnectAdmission<Int>(limit: 8)
        var started: [Int] = []
        for key in 0..<5000 where admission.request(key) { started.append(key) }
        var index = 0
        while index < started.count {
            started.append(contentsOf: admission.finish(started[index]))
            index += 1
        }
        #expect(started == Array(0..<5000))
        #expect(admission.inFlight.isEmpty && admission.waitingCount == 0)
    }

    @Test func urgentConnectsGoBeforeDeferrableOnesThatWaitedLonger() {
        var admission = ConnectAdmission<Int>(limit: 1)
        let asked = [
            admission.request(1), admission.request(10, priority: .deferrable),
            admission.request(11, priority: .deferrable), admission.request(2), admission.request(3),
        ]
        #expect(asked == [true, false, false, false, false])
        #expect(admission.waitingCount == 4)
        let order = [1, 2, 3, 10, 11].map { admission.finish($0) }
        #expect(order == [[2], [3], [10], [11], []], "sessions first, then the login checks in their order")
        #expect(admission.waitingCount == 0)
    }

    @Test func aWithdrawnDeferrableKeyLosesItsPlaceToo() {
        var admission = ConnectAdmission<Int>(limit: 1)
        let asked = [
            admission.request(1), admission.request(10, priority: .deferrable),
            admission.request(11, priority: .deferrable),
        ]
        #expect(asked == [true, false, false])
        let withdrawn = admission.finish(10)
        #expect(withdrawn == [])
        let next = admission.finish(1)
        #expect(next == [11])
    }
}
