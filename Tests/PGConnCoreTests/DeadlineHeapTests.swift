import Testing

@testable import PGConnCore

@Suite struct DeadlineHeapTests {
    @Test func popsDueEntriesInDeadlineOrderOnly() {
        var heap = DeadlineHeap<Int>()
        var generator = SplitMix64(seed: 3)
        let deadlines = (0..<500).map { _ in Int64(generator.next() % 10_000) }
        for (index, deadline) in deadlines.enumerated() { heap.push(MonotonicInstant(nanoseconds: deadline), index) }
        #expect(heap.earliest == MonotonicInstant(nanoseconds: deadlines.min()!))
        #expect(heap.popDue(now: MonotonicInstant(nanoseconds: deadlines.min()! - 1)) == nil, "nothing due yet")
        var popped: [Int64] = []
        while let entry = heap.popDue(now: MonotonicInstant(nanoseconds: 5_000)) {
            #expect(deadlines[entry.tag] == entry.deadline.nanoseconds)
            popped.append(entry.deadline.nanoseconds)
        }
        #expect(popped == deadlines.filter { $0 <= 5_000 }.sorted())
        #expect(heap.count == deadlines.filter { $0 > 5_000 }.count)
    }
}
