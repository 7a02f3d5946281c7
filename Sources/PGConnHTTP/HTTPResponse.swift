/// One HTTP response, built by a handler and copied into libmicrohttpd by the server (a shared body is not
/// copied: libmicrohttpd sends it from where it is).
///
/// The server always sends `Content-Length` (computed from `body`; a `Content-Length` given here is
/// ignored) and adds `Content-Type: application/octet-stream` when `headers` name none. For a HEAD
/// request the server sends the headers of this response without its body.
public struct HTTPResponse: Sendable {
    public static let textContentType = "text/plain; charset=utf-8"
    public static let htmlContentType = "text/html; charset=utf-8"
    public static let jsonContentType = "application/json"

    /// The status code, 100...999.
    public var status: Int
    /// Headers in sending order; names are case-insensitive and may repeat.
    public var headers: [(String, String)]
    /// The body; for a shared one (``shared``), a copy of it. Setting it replaces a shared body.
    public var body: [UInt8] {
        get { shared?.bytes ?? ownBody }
        set {
            ownBody = newValue
            shared = nil
        }
    }
    private var ownBody: [UInt8]
    /// A body shared with other responses, which the server sends without copying it (``SharedBytes``).
    public private(set) var shared: SharedBytes?

    public init(status: Int = 200, headers: [(String, String)] = [], body: [UInt8] = []) {
        self.status = status
        self.headers = headers
        self.ownBody = body
    }

    public init(status: Int = 200, headers: [(String, String)] = [], shared: SharedBytes) {
        self.status = status
        self.headers = headers
        self.ownBody = []
        self.shared = shared
    }

    /// A UTF-8 plain-text response.
    public static func text(_ text: String, status: Int = 200) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", textContentType)], body: Array(text.utf8))
    }

    /// A UTF-8 HTML response; the caller escapes what it interpolates.
    public static func html(_ html: String, status: Int = 200) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", htmlContentType)], body: Array(html.utf8))
    }

    /// A JSON response from already encoded JSON text.
    public static func json(_ json: String, status: Int = 200) -> HTTPResponse {
        HTTPResponse(status: status, headers: [("Content-Type", jsonContentType)], body: Array(json.utf8))
    }

    /// The first value of a header, looked up case-insensitively.
    public func header(_ name: String) -> String? {
        let wanted = name.lowercased()
        return headers.first { $0.0.lowercased() == wanted }?.1
    }
}
