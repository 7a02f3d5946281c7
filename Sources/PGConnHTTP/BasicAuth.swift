import CCrypt
import Dispatch
public import PGConnCore
import PGConnSync
import Synchronization

#if canImport(Glibc)
    import Glibc
#endif

/// The user name and password of an `Authorization: Basic` header.
struct BasicCredentials: Equatable {
    var user: String
    var password: String

    /// Parses `Basic <base64 of user:password>` (the scheme case-insensitive); `nil` for anything else.
    init?(header: String) {
        let parts = header.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "basic",
            let decoded = Base64.decode(Self.trimmed(parts[1])),
            let colon = decoded.firstIndex(of: UInt8(ascii: ":"))
        else { return nil }
        user = String(decoding: decoded[..<colon], as: UTF8.self)
        password = String(decoding: decoded[(colon + 1)...], as: UTF8.self)
    }

    private static func trimmed(_ text: Substring) -> Substring {
        let blank: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        let start = text.firstIndex { !blank($0) } ?? text.endIndex
        let end = text.lastIndex { !blank($0) }.map(text.index(after:)) ?? start
        return text[start..<max(start, end)]
    }
}

/// Standard base64 (RFC 4648 section 4, padding optional), decoded by hand: this module does without Foundation.
enum Base64 {
    private static let values: [UInt8: UInt8] = {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
        return Dictionary(uniqueKeysWithValues: alphabet.enumerated().map { ($0.element, UInt8($0.offset)) })
    }()

    static func decode<S: StringProtocol>(_ text: S) -> [UInt8]? {
        var bytes = Array(text.utf8)
        while bytes.last == UInt8(ascii: "=") { bytes.removeLast() }
        guard bytes.count % 4 != 1, text.utf8.count - bytes.count <= 2 else { return nil }
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        for byte in bytes {
            guard let value = values[byte] else { return nil }
            accumulator = accumulator << 6 | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8(truncatingIfNeeded: accumulator >> UInt32(bits)))
            }
        }
        return output
    }
}

/// Checks passwords against bcrypt hashes with libxcrypt's `crypt_r`, which needs a 32 KiB work area: one
/// instance is used by one thread at a time (``WebGate`` keeps it on its serial verification queue).
final class BcryptChecker: @unchecked Sendable {
    // @unchecked: `scratch` is used only by `matches`, which ``WebGate`` calls on its one serial queue.
    private let scratch: UnsafeMutablePointer<crypt_data>

    /// Compared against when the user is unknown, so an unknown user costs as much time as a wrong password.
    static let decoy = "$2y$10$QzRban6sW14UFO3b0pgu6eHSpvqAKxK5CTcSRTEFL4fSwaZ3A7AfW"

    init() {
        scratch = .allocate(capacity: 1)
        memset(scratch, 0, MemoryLayout<crypt_data>.size)
    }

    deinit { scratch.deallocate() }

    /// Whether `password` hashes to `hash` (a `$2y$`, `$2b$` or `$2a$` hash); false for any failure.
    func matches(password: String, hash: String) -> Bool {
        guard let result = crypt_r(password, hash, scratch) else { return false }
        let computed = Array(String(cString: result).utf8)
        let expected = Array(hash.utf8)
        // crypt_r reports failure with a short string starting with "*"; the comparison takes the same time
        // wherever the first difference is.
        guard computed.count == expected.count, computed.first != UInt8(ascii: "*") else { return false }
        var difference: UInt8 = 0
        for (a, b) in zip(computed, expected) { difference |= a ^ b }
        return difference == 0
    }
}

/// What `--web.config.file` asks of every request besides TLS: basic authentication (`basic_auth_users`) and
/// the response headers (`http_server_config.headers`). Wraps the router's `reply`.
///
/// A bcrypt check takes tens of milliseconds by design, so it never runs on an HTTP thread: the request is
/// deferred and checked on one serial queue, and a verified `Authorization` header is remembered for
/// ``cacheLifetime`` (as exporter-toolkit caches), so an authorised scraper pays once a minute. At most
/// ``maximumPendingChecks`` checks wait at once; beyond that a request with unverified credentials gets 429
/// at once. A flood of wrong passwords therefore costs one thread and never delays a scrape whose
/// credentials are cached. Wrong credentials are not remembered: each one costs the flood its own bcrypt.
public final class WebGate: Sendable {
    /// The part of the web config this gate enforces, replaced on reload.
    public struct Settings: Sendable {
        public var users: [String: String]
        public var headers: [HTTPHeaderSetting]
        /// Paths answered without authentication (`--web.auth-exempt-path`), e.g. `/-/healthy`.
        public var exemptPaths: Set<String>

        public init(users: [String: String] = [:], headers: [HTTPHeaderSetting] = [], exemptPaths: Set<String> = []) {
            self.users = users
            self.headers = headers
            self.exemptPaths = exemptPaths
        }
    }

    public static let cacheLifetime = Duration.seconds(60)
    public static let maximumPendingChecks = 16
    static let maximumCachedCredentials = 1024

    private struct State {
        var settings: Settings
        /// Verified `Authorization` header values and when they stop counting.
        var verified: [String: MonotonicInstant] = [:]
        var pendingChecks = 0
    }

    private let state: Lock<State>
    private let checker = BcryptChecker()
    private let queue = DispatchQueue(label: "pgconn.http.basic-auth")
    private let now: @Sendable () -> MonotonicInstant

    /// - Parameter now: the clock for the cache (tests); the monotonic clock by default.
    public init(_ settings: Settings, now: (@Sendable () -> MonotonicInstant)? = nil) {
        self.state = Lock(State(settings: settings))
        self.now = now ?? { monotonicNow() }
    }

    /// New users, headers or exempt paths; forgets every verified credential.
    public func update(_ settings: Settings) {
        state.withLock { $0 = State(settings: settings, pendingChecks: $0.pendingChecks) }
    }

    /// Whether any user is configured.
    public var requiresAuthentication: Bool { state.withLock { !$0.settings.users.isEmpty } }

    /// `next` behind authentication, with the configured headers added to every response.
    public func wrap(_ next: @escaping @Sendable (HTTPRequest) -> HTTPReply) -> @Sendable (HTTPRequest) -> HTTPReply {
        { [self] request in decorate(authorize(request, next: next)) }
    }

    private func decorate(_ reply: HTTPReply) -> HTTPReply {
        let headers = state.withLock { $0.settings.headers }
        guard !headers.isEmpty else { return reply }
        @Sendable func adding(_ response: HTTPResponse) -> HTTPResponse {
            var response = response
            for header in headers where response.header(header.name) == nil {
                response.headers.append((header.name, header.value))
            }
            return response
        }
        switch reply {
        case .response(let response):
            return .response(adding(response))
        case .deferred(let start):
            return .deferred { respond in start { respond(adding($0)) } }
        }
    }

    private enum Decision {
        case pass
        case refuse(HTTPResponse)
        case check(BasicCredentials, hash: String?)
    }

    private func authorize(_ request: HTTPRequest, next: @escaping @Sendable (HTTPRequest) -> HTTPReply) -> HTTPReply {
        let header = request.header("authorization")
        let instant = now()
        let decision: Decision = state.withLock { state in
            if state.settings.users.isEmpty || state.settings.exemptPaths.contains(request.path) { return .pass }
            guard let header, let credentials = BasicCredentials(header: header) else {
                return .refuse(Self.unauthorized)
            }
            if let until = state.verified[header], instant < until { return .pass }
            guard state.pendingChecks < Self.maximumPendingChecks else {
                var busy = HTTPResponse.text("Too many authentication checks in progress\n", status: 429)
                busy.headers.append(("Retry-After", "1"))
                return .refuse(busy)
            }
            state.pendingChecks += 1
            return .check(credentials, hash: state.settings.users[credentials.user])
        }
        switch decision {
        case .pass:
            return next(request)
        case .refuse(let response):
            return .response(response)
        case .check(let credentials, let hash):
            // Given back when the last reference goes: after the check, or with the deferred answer if the server
            // drops it unstarted (it is stopping), so the count never leaks a slot.
            let pending = PendingCheck { [self] in state.withLock { $0.pendingChecks -= 1 } }
            return .deferred { [self] respond in
                queue.async { [self] in
                    defer { withExtendedLifetime(pending) {} }
                    let good = checker.matches(password: credentials.password, hash: hash ?? BcryptChecker.decoy)
                    let accepted = good && hash != nil
                    let expiry = now() + Self.cacheLifetime
                    state.withLock { state in
                        guard accepted, let header else { return }
                        if state.verified.count >= Self.maximumCachedCredentials { state.verified.removeAll() }
                        state.verified[header] = expiry
                    }
                    guard accepted else { return respond(Self.unauthorized) }
                    switch next(request) {
                    case .response(let response): respond(response)
                    case .deferred(let start): start(respond)
                    }
                }
            }
        }
    }

    /// A counted bcrypt check: ``WebGate/maximumPendingChecks`` bounds them.
    private final class PendingCheck: Sendable {
        private let release: @Sendable () -> Void
        init(release: @escaping @Sendable () -> Void) { self.release = release }
        deinit { release() }
    }

    static let unauthorized: HTTPResponse = {
        var response = HTTPResponse.text("Unauthorized\n", status: 401)
        response.headers.append(("WWW-Authenticate", "Basic realm=\"pgconn_exporter\", charset=\"UTF-8\""))
        return response
    }()
}
