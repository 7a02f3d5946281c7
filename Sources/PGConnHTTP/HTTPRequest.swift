/// One HTTP request as a handler sees it, read in full before the handler runs.
///
/// `path` is the percent-decoded path without the query string. `query` holds the decoded arguments: on
/// repetition the first value wins, and a bare `?flag` maps to "". Header names are lowercased and repeated
/// headers are joined with ", ". `body` never exceeds `HTTPServer.maximumBodySize`: the server answers 413
/// itself and never calls the handler for a larger body.
public struct HTTPRequest: Sendable, Equatable {
    /// The method as sent, e.g. "GET", "HEAD", "POST".
    public var method: String
    public var path: String
    public var query: [String: String]
    public var headers: [String: String]
    public var body: [UInt8]

    /// Header names are lowercased here, so tests may build requests with any spelling.
    public init(
        method: String = "GET",
        path: String,
        query: [String: String] = [:],
        headers: [String: String] = [:],
        body: [UInt8] = []
    ) {
        self.method = method
        self.path = path
        self.query = query
        self.headers = Dictionary(
            headers.map { ($0.key.lowercased(), $0.value) },
            uniquingKeysWith: { first, second in "\(first), \(second)" }
        )
        self.body = body
    }

    /// The value of a header, looked up case-insensitively.
    public func header(_ name: String) -> String? {
        headers[name.lowercased()]
    }
}
