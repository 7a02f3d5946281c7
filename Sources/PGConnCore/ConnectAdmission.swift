/// Bounds how many connections are being established at once; the rest wait their turn, first come first served.
///
/// Establishing a connection costs CPU on both ends (TLS, SCRAM's thousands of hash rounds) and a backend on
/// the server. Without a bound, thousands of targets starting together, or reconnecting after a shared server
/// restarts, would hit the database with a connection storm and delay every timer of the I/O thread. Waiting
/// connects have no timeout of their own: the state machines re-base their connect deadline when admitted.
public struct ConnectAdmission<Key: Hashable & Sendable>: Sendable {
    public let limit: Int
    public private(set) var inFlight: Set<Key> = []
    private var waiting: [Key] = []
    private var waitingStart = 0
    private var isWaiting: Set<Key> = []

    public init(limit: Int) {
        precondition(limit > 0, "the connect limit must be positive")
        self.limit = limit
    }

    /// How many connects wait for a turn.
    public var waitingCount: Int { isWaiting.count }

    /// Asks to start a connect for `key`: true if it may start now, false if it was queued.
    public mutating func request(_ key: Key) -> Bool {
        if inFlight.contains(key) { return true }
        if inFlight.count < limit && isWaiting.isEmpty {
            inFlight.insert(key)
            return true
        }
        if isWaiting.insert(key).inserted { waiting.append(key) }
        return false
    }

    /// `key`'s connect finished, failed or was abandoned, or `key` no longer wants its turn. Returns the keys
    /// that may start now, in queue order.
    public mutating func finish(_ key: Key) -> [Key] {
        if inFlight.remove(key) == nil { isWaiting.remove(key) }
        var admitted: [Key] = []
        while inFlight.count < limit, let next = dequeue() {
            inFlight.insert(next)
            admitted.append(next)
        }
        return admitted
    }

    /// The oldest key still waiting; keys that withdrew are skipped (lazy removal keeps `finish` O(1)).
    private mutating func dequeue() -> Key? {
        while waitingStart < waiting.count {
            let key = waiting[waitingStart]
            waitingStart += 1
            if isWaiting.remove(key) != nil {
                compactIfNeeded()
                return key
            }
        }
        compactIfNeeded()
        return nil
    }

    private mutating func compactIfNeeded() {
        if waitingStart > 1024 && waitingStart * 2 > waiting.count {
            waiting.removeFirst(waitingStart)
            waitingStart = 0
        }
    }
}
