/// A binary min-heap of deadlines, each tagged with what it belongs to.
///
/// The monitor keeps one entry per scheduled timer of every target, so the loop only ever asks for the
/// earliest; pushing and popping are O(log n), which keeps 5,000 targets cheap. Entries are never removed
/// early: the owner remembers which deadline it scheduled last and ignores a popped entry that no longer
/// matches (lazy deletion).
public struct DeadlineHeap<Tag: Sendable>: Sendable {
    public struct Entry: Sendable {
        public var deadline: MonotonicInstant
        public var tag: Tag
    }

    private var entries: [Entry] = []

    public init() {}

    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }
    /// The earliest deadline, if any.
    public var earliest: MonotonicInstant? { entries.first?.deadline }

    public mutating func push(_ deadline: MonotonicInstant, _ tag: Tag) {
        entries.append(Entry(deadline: deadline, tag: tag))
        var child = entries.count - 1
        while child > 0 {
            let parent = (child - 1) / 2
            guard entries[child].deadline < entries[parent].deadline else { break }
            entries.swapAt(child, parent)
            child = parent
        }
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    public mutating func popDue(now: MonotonicInstant) -> Entry? {
        guard let first = entries.first, first.deadline <= now else { return nil }
        let last = entries.removeLast()
        if !entries.isEmpty {
            entries[0] = last
            var parent = 0
            while true {
                let left = 2 * parent + 1
                let right = left + 1
                var smallest = parent
                if left < entries.count && entries[left].deadline < entries[smallest].deadline { smallest = left }
                if right < entries.count && entries[right].deadline < entries[smallest].deadline { smallest = right }
                if smallest == parent { break }
                entries.swapAt(parent, smallest)
                parent = smallest
            }
        }
        return first
    }
}
