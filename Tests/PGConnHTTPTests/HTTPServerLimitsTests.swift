import Foundation
import Testing

@testable import PGConnHTTP

#if canImport(Glibc)
    import Glibc
#endif

/// The start of a request line and nothing more: the server must wait for the rest.
private let halfSentRequest = Array("GET /metrics HTT".utf8)

/// Raises this process's RLIMIT_NOFILE soft limit to at least `needed` (up to the hard limit); false when the
/// hard limit is lower. The test process holds both ends of every connection.
private func raiseOpenFileLimit(to needed: Int) -> Bool {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return false }
    if limit.rlim_cur >= rlim_t(needed) { return true }
    guard limit.rlim_max >= rlim_t(needed) else { return false }
    limit.rlim_cur = rlim_t(needed)
    return setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0
}

/// Opens `count` connections from `source`, each sending `halfSentRequest` and then nothing. A send to a
/// connection the server has already closed is not an error here.
private func openHalfSentConnections(_ count: Int, from source: String, port: Int) throws -> [Int32] {
    var sockets: [Int32] = []
    do {
        for _ in 0..<count {
            let socket = try RawHTTPClient.connect(host: "127.0.0.1", port: port, from: source, timeout: .seconds(2))
            sockets.append(socket)
            try? RawHTTPClient.sendAll(socket, halfSentRequest)
        }
    } catch {
        for socket in sockets { close(socket) }
        throw error
    }
    return sockets
}

/// Polls `condition` every 10 ms until it holds or `timeout` passes; returns whether it held.
private func awaitCondition(within timeout: Duration, _ condition: () -> Bool) -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// How long `body` took.
private func measure<T>(_ body: () throws -> T) rethrows -> (T, Duration) {
    let start = ContinuousClock.now
    let result = try body()
    return (result, ContinuousClock.now - start)
}

@Suite struct HTTPServerLimitsTests {
    /// The report: ~1,015 idle half-sent connections from one client made every scrape time out
    /// (libmicrohttpd's default limit is 1,020 connections; at it, new ones wait in the listen backlog).
    @Test func idleHalfSentConnectionsFromOneAddressDoNotShutOutAnother() throws {
        let flood = 1_100
        try #require(raiseOpenFileLimit(to: 2 * flood + 512), "RLIMIT_NOFILE hard limit too low for the test")
        try withServer { (server: HTTPServer) throws in
            let limits = try #require(server.limits)
            let (idle, opening) = try measure {
                try openHalfSentConnections(flood, from: "127.0.0.2", port: server.boundPort)
            }
            defer { for socket in idle { close(socket) } }
            // The connections past the per-address limit were closed as soon as they were accepted.
            #expect(awaitCondition(within: .seconds(5)) { server.openConnections <= limits.perAddress })

            let (response, took) = try measure {
                try RawHTTPClient.send(
                    port: server.boundPort, from: "127.0.0.1", timeout: .seconds(2), target: "/metrics")
            }
            #expect(response.status == 200)
            #expect(took < .seconds(1))
            print("\(flood) half-sent connections from 127.0.0.2 opened in \(opening); GET from 127.0.0.1 took \(took)")
        }
    }

    @Test func theConnectionPastThePerAddressLimitIsClosedAtOnceAndOthersAreServed() throws {
        let limits = ConnectionLimits(
            total: 32, perAddress: 4, idleTimeout: .seconds(30), requestDeadline: .seconds(30))
        try withServer(limits: limits) { (server: HTTPServer) throws in
            let held = try openHalfSentConnections(4, from: "127.0.0.2", port: server.boundPort)
            defer { for socket in held { close(socket) } }
            #expect(awaitCondition(within: .seconds(2)) { server.openConnections == 4 })

            let extra = try RawHTTPClient.connect(
                host: "127.0.0.1", port: server.boundPort, from: "127.0.0.2", timeout: .seconds(2))
            defer { close(extra) }
            try? RawHTTPClient.sendAll(extra, Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
            let (closed, took) = measure { RawHTTPClient.awaitClose(extra) }
            #expect(closed)
            #expect(took < .milliseconds(500))

            let response = try RawHTTPClient.send(
                port: server.boundPort, from: "127.0.0.1", timeout: .seconds(2), target: "/")
            #expect(response.status == 200)
            // The held ones were left alone. libmicrohttpd shuts a served connection down (the client sees its
            // end) a moment before it reports it closed, so the count is awaited, not read once.
            #expect(awaitCondition(within: .seconds(2)) { server.openConnections == 4 })
        }
    }

    @Test func anIdleHalfSentConnectionIsClosedAfterTheIdleTimeout() throws {
        let limits = ConnectionLimits(total: 32, perAddress: 4, idleTimeout: .seconds(1), requestDeadline: .seconds(30))
        try withServer(limits: limits) { (server: HTTPServer) throws in
            let socket = try RawHTTPClient.connect(host: "127.0.0.1", port: server.boundPort, timeout: .seconds(5))
            defer { close(socket) }
            try RawHTTPClient.sendAll(socket, halfSentRequest)
            let (closed, took) = measure { RawHTTPClient.awaitClose(socket) }
            #expect(closed)
            #expect(took > .milliseconds(800) && took < .seconds(3))
        }
    }

    /// The deadline covers receiving the request, not the handler: a slow answer is still sent.
    @Test func aHandlerSlowerThanTheRequestDeadlineStillAnswers() throws {
        let limits = ConnectionLimits(total: 32, perAddress: 4, idleTimeout: .seconds(5), requestDeadline: .seconds(1))
        let slow: @Sendable (HTTPRequest) -> HTTPResponse = { request in
            usleep(1_600_000)  // longer than the deadline plus one check interval
            return echo(request)
        }
        try withServer(limits: limits, handler: slow) { (server: HTTPServer) throws in
            let response = try RawHTTPClient.send(port: server.boundPort, timeout: .seconds(5), target: "/slow")
            #expect(response.status == 200)
        }
    }

    /// After a response the next request on a kept-alive connection gets a fresh deadline.
    @Test func aKeptAliveConnectionGetsAFreshDeadlineForEachRequest() throws {
        let limits = ConnectionLimits(total: 32, perAddress: 4, idleTimeout: .seconds(5), requestDeadline: .seconds(2))
        try withServer(limits: limits) { (server: HTTPServer) throws in
            let socket = try RawHTTPClient.connect(host: "127.0.0.1", port: server.boundPort, timeout: .seconds(5))
            defer { close(socket) }
            // Pacing, not waiting for a condition: each request comes 1.2 s after the previous event, so the
            // second one arrives past the deadline counted from the connection's opening (2 s).
            for request in ["/first", "/second"] {
                usleep(1_200_000)
                try RawHTTPClient.sendAll(socket, Array("GET \(request) HTTP/1.1\r\nHost: x\r\n\r\n".utf8))
                let response = try RawHTTPClient.readResponse(on: socket)
                #expect(response.status == 200)
                #expect(response.text.contains("path=\(request)\n"))
            }
            // A silent connection after a response is closed at the fresh deadline, before the idle timeout.
            let (closed, took) = measure { RawHTTPClient.awaitClose(socket) }
            #expect(closed)
            #expect(took > .milliseconds(1_500) && took < .milliseconds(3_500))
        }
    }

    /// libmicrohttpd 0.9.75 restarts the idle timeout on every byte; the request deadline still ends it.
    @Test func aTricklingClientIsClosedAtTheRequestDeadline() throws {
        let limits = ConnectionLimits(total: 32, perAddress: 4, idleTimeout: .seconds(2), requestDeadline: .seconds(2))
        try withServer(limits: limits) { (server: HTTPServer) throws in
            let socket = try RawHTTPClient.connect(host: "127.0.0.1", port: server.boundPort, timeout: .seconds(1))
            defer { close(socket) }
            let request = Array("GET / HTTP/1.1\r\nHost: x\r\n".utf8)
            let start = ContinuousClock.now
            var closedAfter: Duration?
            // One byte every 0.5 s, well inside the idle timeout; at most 8 s.
            for byte in request.prefix(16) {
                if (try? RawHTTPClient.sendAll(socket, [byte])) == nil {
                    closedAfter = ContinuousClock.now - start
                    break
                }
                var poller = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
                if poll(&poller, 1, 500) > 0 {
                    #expect(RawHTTPClient.awaitClose(socket))
                    closedAfter = ContinuousClock.now - start
                    break
                }
            }
            let took = try #require(closedAfter, "the trickling connection stayed open")
            #expect(took > .milliseconds(1_500) && took < .seconds(4))
        }
    }
}
