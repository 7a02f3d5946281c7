import Dispatch
import PGConnCore
import PGConnSync
import Synchronization
import Testing

@testable import PGConnHTTP

/// Basic authentication and the configured headers, in front of a handler that answers "ok".
@Suite struct WebGateTests {
    /// bcrypt of "hunter2" at cost 4 (the cheapest: these tests check logic, not cost).
    static let hash = "$2y$04$6WQMkl4zFUHYD90oJYgf6.SXwtFDl/I2bgoIS1uBxCTpS1xT3wL1q"
    static let users = ["prom": hash]

    private func request(_ path: String = "/metrics", authorization: String? = nil) -> HTTPRequest {
        HTTPRequest(
            method: "GET", path: path, query: [:], headers: authorization.map { ["authorization": $0] } ?? [:],
            body: [])
    }

    private static func basic(_ user: String, _ password: String) -> String {
        "Basic " + base64(Array("\(user):\(password)".utf8))
    }

    private static func base64(_ bytes: [UInt8]) -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
        var text = ""
        for chunk in stride(from: 0, to: bytes.count, by: 3) {
            let slice = Array(bytes[chunk..<min(chunk + 3, bytes.count)])
            let value = slice.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (16 - 8 * UInt32($1.offset)) }
            for index in 0..<4 {
                text.append(index <= slice.count ? alphabet[Int(value >> (18 - 6 * UInt32(index)) & 63)] : "=")
            }
        }
        return text
    }

    /// The reply's response, waiting for a deferred one (bounded: a check at cost 4 takes about a millisecond).
    private func answer(_ reply: HTTPReply) -> (HTTPResponse?, deferred: Bool) {
        switch reply {
        case .response(let response): return (response, false)
        case .deferred(let start):
            let box = Lock<HTTPResponse?>(nil)
            let done = DispatchSemaphore(value: 0)
            start { response in
                box.withLock { $0 = response }
                done.signal()
            }
            _ = done.wait(timeout: .now() + 10)
            return (box.withLock { $0 }, true)
        }
    }

    private let ok: @Sendable (HTTPRequest) -> HTTPReply = { _ in .response(.text("ok\n")) }

    @Test func withoutUsersEverythingPasses() {
        let gate = WebGate(WebGate.Settings())
        let (response, deferred) = answer(gate.wrap(ok)(request()))
        #expect(response?.status == 200)
        #expect(!deferred)
    }

    @Test func missingOrMalformedCredentialsGet401WithAChallenge() {
        let reply = WebGate(WebGate.Settings(users: Self.users)).wrap(ok)
        for header in [nil, "Bearer abc", "Basic", "Basic !!!!", "Basic " + Self.base64(Array("nocolon".utf8))] {
            let (response, deferred) = answer(reply(request(authorization: header)))
            #expect(response?.status == 401, "\(header ?? "none")")
            #expect(response?.header("WWW-Authenticate")?.hasPrefix("Basic realm=") == true)
            #expect(!deferred, "no bcrypt check without credentials")
        }
    }

    @Test func wrongPasswordsAndUnknownUsersGet401AfterACheck() {
        let reply = WebGate(WebGate.Settings(users: Self.users)).wrap(ok)
        for header in [Self.basic("prom", "hunter3"), Self.basic("eve", "hunter2"), Self.basic("prom", "")] {
            let (response, deferred) = answer(reply(request(authorization: header)))
            #expect(response?.status == 401)
            #expect(deferred)
        }
    }

    @Test func theRightPasswordPassesAndIsRememberedForAMinute() {
        let clock = Lock(MonotonicInstant(nanoseconds: 1_000_000_000))
        let gate = WebGate(WebGate.Settings(users: Self.users), now: { clock.withLock { $0 } })
        let reply = gate.wrap(ok)
        let header = Self.basic("prom", "hunter2")
        let first = answer(reply(request(authorization: header)))
        #expect(first.0?.status == 200 && first.deferred)
        let second = answer(reply(request(authorization: header)))
        #expect(second.0?.status == 200 && !second.deferred, "answered on the HTTP thread from the cache")
        clock.withLock { $0 = $0 + WebGate.cacheLifetime + .seconds(1) }
        #expect(answer(reply(request(authorization: header))).deferred, "checked again once the minute is over")
        // A reload forgets what was verified (a removed user must not keep access).
        gate.update(WebGate.Settings(users: [:]))
        gate.update(WebGate.Settings(users: Self.users))
        #expect(answer(reply(request(authorization: header))).deferred)
    }

    @Test func exemptPathsAndHeadersApplyToEveryAnswer() {
        let headers = [HTTPHeaderSetting(name: "X-Frame-Options", value: "deny")]
        let reply = WebGate(WebGate.Settings(users: Self.users, headers: headers, exemptPaths: ["/-/healthy"])).wrap(ok)
        let healthy = answer(reply(request("/-/healthy")))
        #expect(healthy.0?.status == 200)
        #expect(healthy.0?.header("X-Frame-Options") == "deny")
        let refused = answer(reply(request("/metrics")))
        #expect(refused.0?.status == 401)
        #expect(refused.0?.header("X-Frame-Options") == "deny")
        let checked = answer(reply(request(authorization: Self.basic("prom", "hunter2"))))
        #expect(checked.0?.status == 200)
        #expect(checked.0?.header("X-Frame-Options") == "deny")
    }

    @Test func aDeferredHandlerBehindTheGateStillAnswers() {
        let slow: @Sendable (HTTPRequest) -> HTTPReply = { _ in
            .deferred { respond in DispatchQueue.global().async { respond(.text("later\n")) } }
        }
        let reply = WebGate(WebGate.Settings(users: Self.users)).wrap(slow)
        let (response, _) = answer(reply(request(authorization: Self.basic("prom", "hunter2"))))
        #expect(response?.body == Array("later\n".utf8))
    }

    @Test func beyondSixteenWaitingChecksTheAnswerIs429AtOnce() {
        // Cost 10: each check takes tens of milliseconds, so the queue is full while the requests arrive.
        let slowHash = "$2y$10$29x8VH7g.6TQ9BpGZmJHxeAFeWkpoGqX5O/avrDrwp.iFByxuVrdu"
        let reply = WebGate(WebGate.Settings(users: ["prom": slowHash])).wrap(ok)
        var starts: [@Sendable (@escaping @Sendable (HTTPResponse) -> Void) -> Void] = []
        var immediate: [HTTPResponse] = []
        for attempt in 0..<(WebGate.maximumPendingChecks + 4) {
            switch reply(request(authorization: Self.basic("prom", "wrong\(attempt)"))) {
            case .response(let response): immediate.append(response)
            case .deferred(let start): starts.append(start)
            }
        }
        #expect(starts.count == WebGate.maximumPendingChecks)
        #expect(immediate.map(\.status) == Array(repeating: 429, count: 4))
        #expect(immediate.first?.header("Retry-After") == "1")
        let answered = Lock(0)
        let done = DispatchSemaphore(value: 0)
        for start in starts {
            start { response in
                if response.status == 401 { answered.withLock { $0 += 1 } }
                done.signal()
            }
        }
        for _ in starts { _ = done.wait(timeout: .now() + 60) }
        #expect(answered.withLock { $0 } == WebGate.maximumPendingChecks)
    }

    /// A server that is stopping drops deferred answers without starting them: their checks' slots come back.
    @Test func droppedDeferredChecksGiveTheirSlotsBack() {
        let reply = WebGate(WebGate.Settings(users: Self.users)).wrap(ok)
        for round in 0..<3 {
            var deferred = 0
            for attempt in 0..<WebGate.maximumPendingChecks {
                if case .deferred = reply(request(authorization: Self.basic("prom", "wrong\(round)-\(attempt)"))) {
                    deferred += 1
                }
            }
            // Each reply is dropped unstarted at the end of its statement.
            #expect(deferred == WebGate.maximumPendingChecks, "round \(round): \(deferred) deferred, the rest 429")
        }
    }

    @Test func base64AndCredentialsParsing() {
        #expect(Base64.decode("cHJvbTpodW50ZXIy") == Array("prom:hunter2".utf8))
        #expect(Base64.decode("YQ==") == Array("a".utf8))
        #expect(Base64.decode("YQ") == Array("a".utf8))
        #expect(Base64.decode("Y") == nil)
        #expect(Base64.decode("YQ===") == nil)
        #expect(Base64.decode("Y*Q=") == nil)
        #expect(
            BasicCredentials(header: "basic  cHJvbTpodW50ZXIy ") == BasicCredentials(header: "Basic cHJvbTpodW50ZXIy"))
        let parsed = BasicCredentials(header: Self.basic("prom", "a:b:c"))
        #expect(parsed?.user == "prom" && parsed?.password == "a:b:c")
    }

    @Test func bcryptCheckerAcceptsEveryPrefixAndRefusesGarbage() {
        let checker = BcryptChecker()
        #expect(checker.matches(password: "hunter2", hash: Self.hash))
        #expect(checker.matches(password: "hunter2", hash: "$2b$" + Self.hash.dropFirst(4)))
        #expect(checker.matches(password: "hunter2", hash: "$2a$" + Self.hash.dropFirst(4)))
        #expect(!checker.matches(password: "hunter3", hash: Self.hash))
        #expect(!checker.matches(password: "hunter2", hash: "not a hash"))
        #expect(!checker.matches(password: "x", hash: BcryptChecker.decoy))
    }
}
