/// One entry of a target's event history: a session state change or a flip of its probe or login check.
///
/// The ring records what the log records at info level (a repeated identical failure once, not once per
/// attempt), so 256 entries cover hours of a flapping target, not minutes.
public struct TargetEvent: Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// The session's state: `from`/`to` are `start`, `connecting`, `up`, `backoff`.
        case state
        /// The probe result flipped: `from`/`to` are `failing`/`succeeding`.
        case probe
        /// The login check flipped: `from`/`to` are `failing`/`succeeding`.
        case login
        /// The session connected to another server than the one before: `from`/`to` are `host:port`.
        case server
        /// An outage ended on another server than it began on: `from`/`to` are `host:port`, `outage` its length.
        case failover
    }

    /// Unix seconds.
    public var time: Double
    public var kind: Kind
    public var from: String
    public var to: String
    public var failure: Failure?
    /// On a probe's recovery: how long the outage lasted.
    public var outage: Duration?

    public init(time: Double, kind: Kind, from: String, to: String, failure: Failure? = nil, outage: Duration? = nil) {
        self.time = time
        self.kind = kind
        self.from = from
        self.to = to
        // Messages are cut so the ring's size stays bounded whatever a server sends.
        self.failure = failure.map {
            Failure(reason: $0.reason, sqlstate: $0.sqlstate, message: String($0.message.prefix(300)))
        }
        self.outage = outage
    }
}

/// The last ``capacity`` events of one target, oldest first.
public struct EventRing: Sendable {
    public static let capacity = 256

    private var storage: [TargetEvent] = []
    private var start = 0

    public init() {}

    public mutating func append(_ event: TargetEvent) {
        var event = event
        // A target failing the same way again and again sends the same text in a fresh string each time: keep
        // one copy (a String shares its buffer when assigned), so a flapping target's ring holds one message.
        if let message = event.failure?.message, let shared = recentMessage(equalTo: message) {
            event.failure?.message = shared
        }
        if storage.count < Self.capacity {
            storage.append(event)
        } else {
            storage[start] = event
            start = (start + 1) % Self.capacity
        }
    }

    /// Oldest first.
    public var events: [TargetEvent] { Array(storage[start...] + storage[..<start]) }

    /// The same text in one of the last ``sharingWindow`` events' messages, if any.
    private func recentMessage(equalTo message: String) -> String? {
        guard !storage.isEmpty else { return nil }
        let newest = (start + storage.count - 1) % storage.count
        for back in 0..<min(Self.sharingWindow, storage.count) {
            let index = (newest - back + storage.count) % storage.count
            if let candidate = storage[index].failure?.message, candidate == message { return candidate }
        }
        return nil
    }

    static let sharingWindow = 16
}

/// `/api/v1/events` bodies.
public enum EventsJSON {
    /// `{"events":[{"time":...,"target":...,"kind":...,"from":...,"to":...,"reason":...,"sqlstate":...,
    /// "message":...,"outage_seconds":...}, ...]}`, in the order given (newest last).
    public static func render(_ events: [(target: String, event: TargetEvent)]) -> String {
        let items = events.map { target, event in
            let failure = event.failure
            let fields = [
                "\"time\":\(JSONText.quoted(RFC3339.format(event.time)))", "\"target\":\(JSONText.quoted(target))",
                "\"kind\":\(JSONText.quoted(event.kind.rawValue))", "\"from\":\(JSONText.quoted(event.from))",
                "\"to\":\(JSONText.quoted(event.to))",
                "\"reason\":\(failure.map { JSONText.quoted($0.reason.rawValue) } ?? "null")",
                "\"sqlstate\":\(failure?.sqlstate.map(JSONText.quoted) ?? "null")",
                "\"message\":\(failure.map { JSONText.quoted($0.message) } ?? "null")",
                "\"outage_seconds\":\(event.outage.map { "\($0.seconds)" } ?? "null")",
            ]
            return "{" + fields.joined(separator: ",") + "}"
        }
        return "{\"events\":[" + items.joined(separator: ",") + "]}\n"
    }
}

extension RFC3339 {
    /// Parses `2026-12-02T13:00:00Z`, with optional fractional seconds and a `Z` or `±HH:MM` offset (a space
    /// or lowercase `t`/`z` are accepted as RFC 3339 allows); Unix seconds, or `nil` if it is not one.
    public static func parse(_ text: String) -> Double? {
        let chars = Array(text.utf8)
        func number(_ from: Int, _ count: Int) -> Int? {
            guard from + count <= chars.count else { return nil }
            var value = 0
            for byte in chars[from..<(from + count)] {
                guard byte >= 48 && byte <= 57 else { return nil }
                value = value * 10 + Int(byte - 48)
            }
            return value
        }
        guard chars.count >= 20, let year = number(0, 4), chars[4] == 45, let month = number(5, 2), chars[7] == 45,
            let day = number(8, 2), [84, 116, 32].contains(chars[10]), let hour = number(11, 2), chars[13] == 58,
            let minute = number(14, 2), chars[16] == 58, let second = number(17, 2),
            (1...12).contains(month), (1...31).contains(day), hour < 24, minute < 60, second < 61
        else { return nil }
        var index = 19
        var fraction = 0.0
        if chars[index] == 46 {
            var scale = 0.1
            index += 1
            let digitsStart = index
            while index < chars.count, chars[index] >= 48, chars[index] <= 57 {
                fraction += Double(chars[index] - 48) * scale
                scale /= 10
                index += 1
            }
            guard index > digitsStart else { return nil }
        }
        guard index < chars.count else { return nil }
        var offset = 0
        switch chars[index] {
        case 90, 122:
            guard index + 1 == chars.count else { return nil }
        case 43, 45:
            guard index + 6 == chars.count, let hours = number(index + 1, 2), chars[index + 3] == 58,
                let minutes = number(index + 4, 2), hours < 24, minutes < 60
            else { return nil }
            offset = (hours * 3600 + minutes * 60) * (chars[index] == 43 ? 1 : -1)
        default:
            return nil
        }
        // days_from_civil (Howard Hinnant), the inverse of ``format(_:)``.
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        let days = era * 146_097 + dayOfEra - 719_468
        return Double(days * 86400 + hour * 3600 + minute * 60 + second - offset) + fraction
    }
}
