/// One row of the landing page's target table.
///
/// `state` is free text from the monitor (e.g. "connecting", "up", "backoff"); the page escapes it and
/// `name` before writing them into HTML.
public struct LandingTarget: Sendable, Equatable {
    public var name: String
    public var state: String
    public var up: Bool

    public init(name: String, state: String, up: Bool) {
        self.name = name
        self.state = state
        self.up = up
    }
}
