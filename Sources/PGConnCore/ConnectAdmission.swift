/// Bounds how many connections are being established at once; the rest wait their turn, first come first served
/// within their class: connects that restore a session go before login checks.
///
/// Establishing a connection costs CPU on both ends (TLS, SCRAM's thousands of hash rounds) and a backend on
/// the server. Without a bound, thousands of targets starting together, or reconnecting after a shared server
/// restarts, would hit the database with a connection storm and delay every timer of the I/O thread. Waiting
/// connects have no timeout of their own: the state machines re-base their connect deadline when admitted.
///
/// Login checks are ``Priority/deferrable``: after a restart behind thousands of targets the sessions (what
/// `pgconn_up` reports) come back first, and the checks due meanwhile run once the storm is over, rather than
/// taking half of the turns (a SCRAM login costs about 10 ms of CPU with libpq 15 on OpenSSL 3.0).
public struct ConnectAdmission<Key: Hashable & Sendable>: Sendable {
    public enum Priority: Sendable {
        case urgent
        case deferrable
    }

    /// Keys in arrival order; keys that withdrew are skipped when reached (lazy removal keeps `finish` O(1)).
    private struct Queue: Sendable {
        var keys: [Key] = []
        var start = 0

        mutating func pop(where isWaiting: (Key) -> Bool) -> Key? {
            defer { compactIfNeeded() }
            while start < keys.count {
                let key = keys[start]
                start += 1
                if isWaiting(key) { return key }
            }
            return nil
        }

        private mutating func compactIfNeeded() {
            if start > 1024 && start * 2 > keys.count {
                keys.removeFirst(start)
                start = 0
            }
        }
    }

    public let limit: Int
    public private(set) var inFlight: Set<Key> = []
    private var urgent = Queue()
    private var deferrable = Queue()
    private var isWaiting: Set<Key> = []

    public init(limit: Int) {
        precondition(limit > 0, "the connect limit must be positive")
        self.limit = limit
    }

    /// How many connects wait for a turn.
    public var waitingCount: Int { isWaiting.count }

    /// Asks to start a connect for `key`: true if it may start now, false if it was queued.
    public mutating func request(_ key: Key, priority: Priority = .urgent) -> Bool {
        if inFlight.contains(key) { return true }
        if inFlight.count < limit && isWaiting.isEmpty {
            inFlight.insert(key)
            return true
        }
        if isWaiting.insert(key).inserted {
            switch priority {
            case .urgent: urgent.keys.append(key)
            case .deferrable: deferrable.keys.append(key)
            }
        }
        return false
    }

    /// `key`'s connect finished, failed or was abandoned, or `key` no longer wants its turn. Returns the keys
    /// that may start now: urgent ones first, each class in queue order.
    public mutating func finish(_ key: Key) -> [Key] {
        if inFlight.remove(key) == nil { isWaiting.remove(key) }
        var admitted: [Key] = []
        while inFlight.count < limit, let next = dequeue() {
            inFlight.insert(next)
            admitted.append(next)
        }
        return admitted
    }

    private mutating func dequeue() -> Key? {
        var found: Key?
        do {
            // A copy to read while a queue changes; it ends with this scope, before `isWaiting` changes (no copy).
            let waiting = isWaiting
            found = urgent.pop(where: waiting.contains) ?? deferrable.pop(where: waiting.contains)
        }
        guard let key = found else { return nil }
        isWaiting.remove(key)
        return key
    }
}
