import Foundation
import PGConnSync
import Synchronization
import Testing

@testable import PGConnHTTP

#if canImport(Glibc)
    import Glibc
#endif

/// The `respond` closures of deferred requests, kept by the request's `id` query argument.
private final class Responders: Sendable {
    private let byID = Lock<[Int: @Sendable (HTTPResponse) -> Void]>([:])

    var count: Int { byID.withLock { $0.count } }

    /// Defers requests to `/deferred?id=N` and keeps their `respond`; answers any other path at once (`echo`).
    func reply(_ request: HTTPRequest) -> HTTPReply {
        guard request.path == "/deferred", let id = request.query["id"].flatMap(Int.init) else {
            return .response(echo(request))
        }
        return .deferred { respond in self.byID.withLock { $0[id] = respond } }
    }

    /// Calls the `respond` kept for `id`, outside the lock; nothing when there is none yet.
    func respond(_ id: Int, with response: HTTPResponse) {
        byID.withLock { $0[id] }?(response)
    }

    /// Every kept `respond`, by id.
    var all: [Int: @Sendable (HTTPResponse) -> Void] { byID.withLock { $0 } }
}

/// Starts a server with a deferring handler, runs `body` and always stops it.
private func withServer(
    limits: ConnectionLimits? = nil,
    reply: @escaping @Sendable (HTTPRequest) -> HTTPReply,
    _ body: (HTTPServer) throws -> Void
) throws {
    let server = HTTPServer(listenAddress: "127.0.0.1:0", limits: limits, reply: reply)
    try server.start()
    defer { server.stop() }
    try body(server)
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
private func awaitCondition(within timeout: Duration = .seconds(10), _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// Opens a connection and sends one request on it without reading the answer.
private func sendRequest(port: Int, target: String, keepAlive: Bool = false) throws -> Int32 {
    let socket = try RawHTTPClient.connect(host: "127.0.0.1", port: port, timeout: .seconds(10))
    do {
        try sendRequest(on: socket, target: target, keepAlive: keepAlive)
    } catch {
        close(socket)
        throw error
    }
    return socket
}

/// Sends a GET on an open connection; without `keepAlive` it asks the server to close after the answer.
private func sendRequest(on socket: Int32, target: String, keepAlive: Bool) throws {
    let connection = keepAlive ? "" : "Connection: close\r\n"
    try RawHTTPClient.sendAll(socket, Array("GET \(target) HTTP/1.1\r\nHost: x\r\n\(connection)\r\n".utf8))
}

/// Calls `respond` on a thread of its own after `delay`: the dispatch queues may be busy with other tests'
/// blocking work and run a delayed item late.
private func respondLater(
    after delay: Duration = .zero,
    _ respond: @escaping @Sendable (HTTPResponse) -> Void,
    with response: HTTPResponse
) {
    Thread.detachNewThread {
        if delay > .zero { usleep(UInt32(delay / .microseconds(1))) }
        respond(response)
    }
}

@Suite struct HTTPServerDeferredTests {
    @Test func headOnADeferredRouteSendsTheHeadersWithoutTheBody() throws {
        let reply: @Sendable (HTTPRequest) -> HTTPReply = { request in
            .deferred { respond in respondLater(respond, with: .text("method \(request.method)\n")) }
        }
        try withServer(reply: reply) { (server: HTTPServer) throws in
            let get = try RawHTTPClient.send(port: server.boundPort, target: "/deferred")
            #expect(get.status == 200)
            #expect(get.text == "method GET\n")
            // RawHTTPClient reads until the server closes, so a body sent for HEAD would show.
            let head = try RawHTTPClient.send(port: server.boundPort, method: "HEAD", target: "/deferred")
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
            #expect(head.header("Content-Type") == "text/plain; charset=utf-8")
            #expect(head.header("Content-Length") == String("method HEAD\n".utf8.count))
        }
    }

    @Test func respondCalledInsideStartAnswersAndASecondCallIsIgnored() throws {
        let reply: @Sendable (HTTPRequest) -> HTTPReply = { _ in
            .deferred { respond in
                respond(.text("at once\n", status: 201))
                respond(.text("second\n", status: 500))
            }
        }
        try withServer(reply: reply) { (server: HTTPServer) throws in
            for _ in 0..<3 {
                let response = try RawHTTPClient.send(port: server.boundPort, target: "/")
                #expect(response.status == 201)
                #expect(response.text == "at once\n")
            }
            #expect(awaitCondition { server.deferredRequests == 0 && server.openRequests == 0 })
        }
    }

    /// The request is in once the handler runs: neither the request deadline nor the idle timeout ends a
    /// request whose answer takes longer than both.
    @Test func aDeferredAnswerSlowerThanTheDeadlineAndTheIdleTimeoutIsStillSent() throws {
        let limits = ConnectionLimits(total: 32, perAddress: 4, idleTimeout: .seconds(1), requestDeadline: .seconds(1))
        let reply: @Sendable (HTTPRequest) -> HTTPReply = { _ in
            // Longer than either limit plus one deadline check interval.
            .deferred { respond in respondLater(after: .milliseconds(2_200), respond, with: .text("slow\n")) }
        }
        try withServer(limits: limits, reply: reply) { (server: HTTPServer) throws in
            let response = try RawHTTPClient.send(port: server.boundPort, timeout: .seconds(5), target: "/slow")
            #expect(response.status == 200)
            #expect(response.text == "slow\n")
        }
    }

    @Test func aDeferredAnswerDoesNotHoldUpRequestsOnOtherConnections() throws {
        let started = DispatchSemaphore(value: 0)
        let respondedAt = Lock<ContinuousClock.Instant?>(nil)
        let reply: @Sendable (HTTPRequest) -> HTTPReply = { request in
            guard request.path == "/deferred" else { return .response(echo(request)) }
            return .deferred { respond in
                started.signal()
                respondLater(
                    after: .milliseconds(300),
                    { response in
                        respondedAt.withLock { $0 = ContinuousClock.now }
                        respond(response)
                    }, with: .text("later\n"))
            }
        }
        try withServer(reply: reply) { (server: HTTPServer) throws in
            let port = server.boundPort
            let deferred = Lock<(Result<RawHTTPResponse, any Error>, ContinuousClock.Instant)?>(nil)
            let done = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                let result = Result { try RawHTTPClient.send(port: port, target: "/deferred") }
                let answeredAt = ContinuousClock.now
                deferred.withLock { $0 = (result, answeredAt) }
                done.signal()
            }
            try #require(started.wait(timeout: .now() + 10) == .success, "the deferred request never arrived")
            let syncStart = ContinuousClock.now
            var syncAnswered: [ContinuousClock.Instant] = []
            for request in 0..<50 {
                let response = try RawHTTPClient.send(port: port, target: "/sync?r=\(request)")
                #expect(response.status == 200)
                #expect(response.text.contains("query r=\(request)\n"))
                syncAnswered.append(ContinuousClock.now)
            }
            try #require(done.wait(timeout: .now() + 10) == .success, "the deferred request was never answered")
            let (result, deferredAnsweredAt) = try #require(deferred.withLock { $0 })
            let response = try result.get()
            #expect(response.status == 200)
            #expect(response.text == "later\n")
            #expect(syncAnswered.count == 50)
            #expect(syncAnswered.allSatisfy { $0 < deferredAnsweredAt })
            let last = try #require(syncAnswered.last)
            let responded = try #require(respondedAt.withLock { $0 })
            print(
                "50 requests answered in \(last - syncStart); the deferred one \(deferredAnsweredAt - syncStart),"
                    + " \(deferredAnsweredAt - responded) after its respond")
        }
    }

    @Test func aHundredConcurrentDeferredRequestsAreAllAnswered() throws {
        let responders = Responders()
        // A hundred from one address: above the default per-address limit.
        let limits = ConnectionLimits(
            total: 256, perAddress: 128, idleTimeout: .seconds(30), requestDeadline: .seconds(30))
        try withServer(limits: limits, reply: responders.reply) { (server: HTTPServer) throws in
            var sockets: [Int32] = []
            defer { for socket in sockets { close(socket) } }
            for id in 0..<100 {
                sockets.append(try sendRequest(port: server.boundPort, target: "/deferred?id=\(id)"))
            }
            // All suspended at once: none is answered before the last one arrived.
            #expect(awaitCondition { responders.count == 100 })
            #expect(server.deferredRequests == 100)
            Thread.detachNewThread {
                for id in (0..<100).reversed() { responders.respond(id, with: .text("answer \(id)\n")) }
            }
            for (id, socket) in sockets.enumerated() {
                let response = try RawHTTPClient.readResponse(on: socket)
                #expect(response.status == 200)
                #expect(response.text == "answer \(id)\n")
            }
            #expect(awaitCondition { server.deferredRequests == 0 && server.openRequests == 0 })
        }
    }

    /// On a kept-alive connection, a second `respond` of the first request comes while the second one waits:
    /// it must not answer it.
    @Test func aSecondRespondIsIgnoredEvenWhenTheConnectionWaitsForItsNextAnswer() throws {
        let responders = Responders()
        try withServer(reply: responders.reply) { (server: HTTPServer) throws in
            let socket = try sendRequest(port: server.boundPort, target: "/deferred?id=1", keepAlive: true)
            defer { close(socket) }
            #expect(awaitCondition { responders.count == 1 })
            let first = try #require(responders.all[1])
            Thread.detachNewThread {
                first(.text("first\n"))
                first(.text("first again\n", status: 500))
            }
            let response = try RawHTTPClient.readResponse(on: socket)
            #expect(response.status == 200)
            #expect(response.text == "first\n")

            try sendRequest(on: socket, target: "/deferred?id=2", keepAlive: true)
            #expect(awaitCondition { responders.count == 2 })
            first(.text("first, late\n", status: 500))
            responders.respond(2, with: .text("second\n"))
            let next = try RawHTTPClient.readResponse(on: socket)
            #expect(next.status == 200)
            #expect(next.text == "second\n")
        }
    }

    @Test func aClientGoneWhileSuspendedIsCleanedUpOnRespondAndTheServerStillServes() throws {
        let responders = Responders()
        try withServer(reply: responders.reply) { (server: HTTPServer) throws in
            let socket = try sendRequest(port: server.boundPort, target: "/deferred?id=1")
            #expect(awaitCondition { responders.count == 1 })
            close(socket)
            // libmicrohttpd does not watch a suspended connection, so the request stays until it is answered.
            #expect(server.deferredRequests == 1)
            Thread.detachNewThread { responders.respond(1, with: .text("nobody listens\n")) }
            #expect(awaitCondition { server.deferredRequests == 0 && server.openRequests == 0 })
            responders.respond(1, with: .text("again\n"))

            let response = try RawHTTPClient.send(port: server.boundPort, target: "/after")
            #expect(response.status == 200)
            #expect(response.text.contains("path=/after\n"))
        }
    }

    @Test func stopAnswersSuspendedRequests503PromptlyAndALaterRespondDoesNothing() throws {
        let responders = Responders()
        let server = HTTPServer(listenAddress: "127.0.0.1:0", reply: responders.reply)
        try server.start()
        defer { server.stop() }
        var sockets: [Int32] = []
        defer { for socket in sockets where socket >= 0 { close(socket) } }
        for id in 0..<10 {
            sockets.append(try sendRequest(port: server.boundPort, target: "/deferred?id=\(id)"))
        }
        #expect(awaitCondition { responders.count == 10 })
        // Two clients gave up already: their 503 cannot be sent, which must not hold up the stop.
        for index in [3, 7] {
            close(sockets[index])
            sockets[index] = -1
        }

        let start = ContinuousClock.now
        server.stop()
        let took = ContinuousClock.now - start
        #expect(took < .seconds(5))
        for socket in sockets where socket >= 0 {
            let response = try RawHTTPClient.readResponse(on: socket)
            #expect(response.status == 503)
            #expect(response.text == "shutting down\n")
        }

        let late = responders.all
        Thread.detachNewThread { for (_, respond) in late { respond(.text("too late\n")) } }
        for (_, respond) in late { respond(.text("too late\n")) }

        // Started again, the server has a fresh table: the old closures reach nothing of it.
        try server.start()
        let fresh = try sendRequest(port: server.boundPort, target: "/deferred?id=100")
        defer { close(fresh) }
        #expect(awaitCondition { responders.count == 11 })
        for (_, respond) in late { respond(.text("too late\n", status: 500)) }
        responders.respond(100, with: .text("fresh\n"))
        let response = try RawHTTPClient.readResponse(on: fresh)
        #expect(response.status == 200)
        #expect(response.text == "fresh\n")
        print("stop() with 10 suspended requests took \(took)")
    }

    /// `respond` on other threads while `stop()` runs: every client gets its answer or the 503, none hangs.
    @Test(arguments: 0..<5) func respondsRacingStopNeitherCrashNorHang(round: Int) throws {
        let responders = Responders()
        let server = HTTPServer(listenAddress: "127.0.0.1:0", reply: responders.reply)
        try server.start()
        defer { server.stop() }
        var sockets: [Int32] = []
        defer { for socket in sockets { close(socket) } }
        for id in 0..<8 {
            sockets.append(try sendRequest(port: server.boundPort, target: "/deferred?id=\(id)"))
        }
        #expect(awaitCondition { responders.count == 8 })
        let go = DispatchSemaphore(value: 0)
        for thread in 0..<2 {
            Thread.detachNewThread {
                go.wait()
                for id in stride(from: thread, to: 8, by: 2) {
                    if id % 4 == round % 4 { usleep(UInt32(100 * round)) }
                    responders.respond(id, with: .text("answer \(id)\n"))
                }
            }
        }
        go.signal()
        go.signal()
        let start = ContinuousClock.now
        server.stop()
        #expect(ContinuousClock.now - start < .seconds(5))
        for (id, socket) in sockets.enumerated() {
            let response = try RawHTTPClient.readResponse(on: socket)
            #expect(
                (response.status == 200 && response.text == "answer \(id)\n")
                    || (response.status == 503 && response.text == "shutting down\n"))
        }
    }
}
