import Testing

@testable import PGConnCore
@testable import PGConnHTTP

@Suite struct StatusPageTests {
    static let now = 10_000.0

    static func flip(_ secondsAgo: Double, to: String) -> TargetEvent {
        TargetEvent(time: now - secondsAgo, kind: .probe, from: to == "failing" ? "succeeding" : "failing", to: to)
    }

    @Test func theTimelineColoursTheLastHourFromTheProbesFlips() {
        // Up since before the window, down for 15 minutes, up again for the last 15.
        let events = [Self.flip(7200, to: "succeeding"), Self.flip(1800, to: "failing"), Self.flip(900, to: "succeeding")]
        let svg = StatusPage.timeline(events, healthy: true, now: Self.now)
        #expect(
            svg == #"<svg width="240" height="12" role="img" aria-label="last hour, up now">"#
                + ##"<rect x="0.0" y="0" width="120.0" height="12" fill="#2e9e44"/>"##
                + ##"<rect x="120.0" y="0" width="60.0" height="12" fill="#d93025"/>"##
                + ##"<rect x="180.0" y="0" width="60.0" height="12" fill="#2e9e44"/></svg>"##)
    }

    @Test func beforeTheFirstResultTheTimelineIsGrey() {
        let svg = StatusPage.timeline([Self.flip(600, to: "succeeding")], healthy: true, now: Self.now)
        #expect(svg.contains(##"<rect x="0.0" y="0" width="200.0" height="12" fill="#cccccc"/>"##))
        #expect(svg.contains(##"<rect x="200.0" y="0" width="40.0" height="12" fill="#2e9e44"/>"##))
        #expect(!StatusPage.timeline([], healthy: false, now: Self.now).contains("#2e9e44"))
    }

    @Test(arguments: [(40.0, "40s"), (432, "7m 12s"), (7500, "2h 5m"), (273_600, "3d 4h")])
    func durations(seconds: Double, text: String) {
        #expect(StatusPage.duration(seconds) == text)
    }
}
