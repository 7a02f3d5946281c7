import Testing

@testable import PGConnCore

@Suite struct EventsTests {
    static let refused = Failure(reason: .refused, message: "Connection refused")

    @Test func theRingKeepsTheNewestInOrder() {
        var ring = EventRing()
        for index in 0..<(EventRing.capacity + 10) {
            ring.append(TargetEvent(time: Double(index), kind: .state, from: "up", to: "backoff"))
        }
        let times = ring.events.map(\.time)
        #expect(times.count == EventRing.capacity)
        #expect(times.first == 10 && times.last == Double(EventRing.capacity + 9))
        #expect(times == times.sorted())
    }

    @Test func messagesAreCut() {
        let long = Failure(reason: .other, message: String(repeating: "x", count: 5000))
        #expect(TargetEvent(time: 0, kind: .probe, from: "a", to: "b", failure: long).failure?.message.count == 300)
    }

    @Test(arguments: [
        ("2026-12-02T13:00:00Z", 1_796_216_400.0), ("2026-12-02T13:00:00.250Z", 1_796_216_400.25),
        ("2026-12-02T14:00:00+01:00", 1_796_216_400.0), ("2026-12-02 12:30:00-00:30", 1_796_216_400.0),
        ("1970-01-01T00:00:00z", 0), ("2000-02-29T00:00:00Z", 951_782_400),
    ])
    func rfc3339Parses(text: String, expected: Double) {
        #expect(RFC3339.parse(text) == expected)
    }

    @Test(arguments: [
        "", "yesterday", "2026-12-02", "2026-13-01T00:00:00Z", "2026-12-02T13:00:00", "2026-12-02T13:00:00.Z",
        "2026-12-02T13:00:00+0100", "2026-12-02T25:00:00Z", "1796216400",
    ])
    func rfc3339Rejects(text: String) {
        #expect(RFC3339.parse(text) == nil)
    }

    @Test func formatAndParseRoundTrip() {
        for seconds in [0.0, 1_796_216_400.123, 4_102_444_799.5] {
            #expect(RFC3339.parse(RFC3339.format(seconds)) == seconds)
        }
    }

    @Test func jsonIsExact() {
        let events = [
            (
                "db",
                TargetEvent(
                    time: 1_796_216_400, kind: .state, from: "up", to: "backoff",
                    failure: Failure(reason: .adminShutdown, sqlstate: "57P01", message: "terminating connection"))
            ),
            (
                "db",
                TargetEvent(
                    time: 1_796_216_401.5, kind: .probe, from: "failing", to: "succeeding", outage: .milliseconds(1500))
            ),
        ]
        #expect(
            EventsJSON.render(events.map { (target: $0.0, event: $0.1) })
                == #"{"events":[{"time":"2026-12-02T13:00:00.000Z","target":"db","kind":"state","from":"up","to":"backoff","reason":"admin_shutdown","sqlstate":"57P01","message":"terminating connection","outage_seconds":null},{"time":"2026-12-02T13:00:01.500Z","target":"db","kind":"probe","from":"failing","to":"succeeding","reason":null,"sqlstate":null,"message":null,"outage_seconds":1.5}]}"#
                + "\n")
    }

    @Test func theStoreFiltersByTargetAndTimeAndMergesNewestLast() {
        let store = MetricsStore(buildInfo: MetricsStoreTests.buildInfo)
        store.setTargets(MetricsStoreTests.keyed([MetricsStoreTests.target("a"), MetricsStoreTests.target("b")]))
        let a = MetricsStoreTests.id("a")
        let b = MetricsStoreTests.id("b")
        store.recordEvent(a, TargetEvent(time: 10, kind: .state, from: "start", to: "connecting"))
        store.recordEvent(b, TargetEvent(time: 5, kind: .state, from: "start", to: "connecting"))
        store.recordEvent(
            a, TargetEvent(time: 20, kind: .state, from: "connecting", to: "backoff", failure: Self.refused))
        store.recordEvent(MetricsStoreTests.id("gone"), TargetEvent(time: 1, kind: .state, from: "x", to: "y"))
        #expect(
            store.events(target: nil, since: nil)?.map { "\($0.target)@\(Int($0.event.time))" } == [
                "b@5", "a@10", "a@20",
            ])
        #expect(store.events(target: "a", since: 15)?.map(\.event.time) == [20])
        #expect(store.events(target: "nope", since: nil) == nil)
        store.setTargets(MetricsStoreTests.keyed([MetricsStoreTests.target("b")]))
        #expect(
            store.events(target: nil, since: nil)?.map(\.target) == ["b"], "a removed target's history goes with it")
    }
}

extension EventsTests {
    @Test func aRepeatedMessageIsKeptOnceAndStillReadsTheSame() {
        var ring = EventRing()
        for index in 0..<40 {
            let text = String(repeating: "refused ", count: 10) + (index % 2 == 0 ? "a" : "b")
            ring.append(
                TargetEvent(
                    time: Double(index), kind: .state, from: "up", to: "backoff",
                    failure: Failure(reason: .refused, message: text)))
        }
        let messages = ring.events.compactMap(\.failure?.message)
        #expect(messages.count == 40)
        #expect(messages.enumerated().allSatisfy { $0.element.hasSuffix($0.offset % 2 == 0 ? "a" : "b") })
    }
}
