import Foundation
import Synchronization
import Testing

@testable import PGConnHTTP

#if canImport(Glibc)
    import Glibc
    import PGConnSync
#endif

/// Echoes the request as the handler saw it, one `key=value` line each, query and headers sorted.
@Sendable func echo(_ request: HTTPRequest) -> HTTPResponse {
    var lines = ["method=\(request.method)", "path=\(request.path)"]
    lines += request.query.sorted { $0.key < $1.key }.map { "query \($0.key)=\($0.value)" }
    lines += request.headers.filter { $0.key.hasPrefix("x-") }.sorted { $0.key < $1.key }
        .map { "header \($0.key)=\($0.value)" }
    lines.append("body=\(request.body.count)")
    return .text(lines.joined(separator: "\n") + "\n")
}

/// Starts a server, runs `body` and always stops it.
func withServer(
    _ address: String = "127.0.0.1:0",
    limits: ConnectionLimits? = nil,
    handler: @escaping @Sendable (HTTPRequest) -> HTTPResponse = echo,
    _ body: (HTTPServer) throws -> Void
) throws {
    let server = HTTPServer(listenAddress: address, limits: limits, handler: handler)
    try server.start()
    defer { server.stop() }
    try body(server)
}

/// The errno of a connection attempt that should fail, or nil when it connected.
private func connectError(host: String, port: Int) -> Int32? {
    do {
        close(try RawHTTPClient.connect(host: host, port: port))
        return nil
    } catch let error as RawHTTPClientError {
        return error.code
    } catch {
        return EINVAL
    }
}

/// The first non-loopback IPv4 address of this machine, if any.
private func nonLoopbackIPv4Address() -> String? {
    var list: UnsafeMutablePointer<ifaddrs>?
    guard getifaddrs(&list) == 0 else { return nil }
    defer { freeifaddrs(list) }
    var entry = list
    while let current = entry {
        defer { entry = current.pointee.ifa_next }
        guard let address = current.pointee.ifa_addr, Int32(address.pointee.sa_family) == AF_INET else { continue }
        var ipv4 = UnsafeRawPointer(address).loadUnaligned(as: sockaddr_in.self)
        var text = [CChar](repeating: 0, count: Int(INET_ADDRSTRLEN))
        inet_ntop(AF_INET, &ipv4.sin_addr, &text, socklen_t(text.count))
        let name = String(decoding: text.prefix { $0 != 0 }.map(UInt8.init), as: UTF8.self)
        if !name.hasPrefix("127.") { return name }
    }
    return nil
}

/// Whether this machine can connect over IPv6 loopback at all (some containers have no IPv6).
private let hasIPv6Loopback: Bool = {
    let socket = Glibc.socket(AF_INET6, Int32(SOCK_STREAM.rawValue), 0)
    guard socket >= 0 else { return false }
    defer { close(socket) }
    var address = sockaddr_in6()
    address.sin6_family = sa_family_t(AF_INET6)
    address.sin6_addr = in6addr_loopback
    return withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(socket, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) == 0
        }
    }
}()

@Suite struct HTTPServerTests {
    @Test func reportsTheLinkedLibraryVersion() {
        // "0.9.75" here; only the form is asserted so a distribution update does not break the test.
        let parts = HTTPServer.libraryVersion.split(separator: ".")
        #expect(parts.count == 3 && parts.allSatisfy { Int($0) != nil })
    }

    @Test func handsTheParsedRequestToTheHandler() throws {
        try withServer { (server: HTTPServer) throws in
            let response = try RawHTTPClient.send(
                port: server.boundPort,
                target: "/some%20path?b=2&a=x%26y&a=second&flag",
                headers: [("X-Test", "one"), ("X-TEST", "two"), ("X-Other", "3")]
            )
            #expect(response.status == 200)
            #expect(
                response.text == """
                    method=GET
                    path=/some path
                    query a=x&y
                    query b=2
                    query flag=
                    header x-other=3
                    header x-test=one, two
                    body=0

                    """)
        }
    }

    /// A shared body (a rendered page) is lent to libmicrohttpd, not copied: every response sends the same
    /// memory, which stays valid while they do and is released once the last one is done.
    @Test func aSharedBodyIsSentByReferenceAndReleasedAfterwards() throws {
        let page = Array(String(repeating: "pgconn_up{target=\"t\"} 1\n", count: 3_000).utf8)
        weak var released: SharedBytes?
        do {
            let shared = SharedBytes(page)
            released = shared
            try withServer(handler: { _ in HTTPResponse(status: 200, shared: shared) }) { server in
                for _ in 0..<3 {
                    let response = try RawHTTPClient.send(port: server.boundPort, target: "/metrics")
                    #expect(response.status == 200)
                    #expect(response.body == page)
                }
            }
        }
        // The server's last reference (its request-deadline timer's) goes when that timer's queue lets it go.
        let deadline = ContinuousClock.now + .seconds(5)
        while released != nil && ContinuousClock.now < deadline { usleep(5_000) }
        #expect(released == nil, "libmicrohttpd's references were released with its responses")
    }

    @Test func postBodyUpToTheLimitReachesTheHandler() throws {
        try withServer { (server: HTTPServer) throws in
            let body = [UInt8](repeating: 0x61, count: HTTPServer.maximumBodySize)
            let response = try RawHTTPClient.send(port: server.boundPort, method: "POST", target: "/", body: body)
            #expect(response.status == 200)
            #expect(response.text.hasSuffix("body=1048576\n"))
        }
    }

    @Test func bodyOverTheLimitIs413WithoutCallingTheHandler() throws {
        let calls = Atomic<Int>(0)
        try withServer(handler: { request in
            calls.add(1, ordering: .relaxed)
            return echo(request)
        }) { (server: HTTPServer) throws in
            let body = [UInt8](repeating: 0x61, count: 2 << 20)
            let response = try RawHTTPClient.send(port: server.boundPort, method: "POST", target: "/", body: body)
            #expect(response.status == 413)
            #expect(response.text == "Request body larger than 1048576 bytes\n")
            #expect(response.header("Content-Type") == "text/plain; charset=utf-8")
        }
        #expect(calls.load(ordering: .relaxed) == 0)
    }

    @Test func chunkedBodyOverTheLimitIs413() throws {
        try withServer { (server: HTTPServer) throws in
            let chunk = [UInt8](repeating: 0x61, count: 512 * 1024)
            let socket = try RawHTTPClient.connect(host: "127.0.0.1", port: server.boundPort)
            defer { close(socket) }
            var request = Array(
                "PUT / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
            for _ in 0..<3 { request += Array("80000\r\n".utf8) + chunk + Array("\r\n".utf8) }
            request += Array("0\r\n\r\n".utf8)
            let response = try RawHTTPClient.exchange(on: socket, request: request)
            #expect(response.status == 413)
        }
    }

    @Test func everyResponseCarriesContentTypeAndTheRealContentLength() throws {
        let handler: @Sendable (HTTPRequest) -> HTTPResponse = { request in
            request.path == "/empty"
                ? HTTPResponse(status: 200)
                : HTTPResponse(status: 201, headers: [("Content-Length", "999"), ("X-Kept", "yes")], body: [1, 2, 3])
        }
        try withServer(handler: handler) { (server: HTTPServer) throws in
            let response = try RawHTTPClient.send(port: server.boundPort, target: "/bytes")
            #expect(response.status == 201)
            #expect(response.header("Content-Type") == "application/octet-stream")
            #expect(response.header("Content-Length") == "3")
            #expect(response.header("X-Kept") == "yes")
            #expect(response.body == [1, 2, 3])

            let empty = try RawHTTPClient.send(port: server.boundPort, target: "/empty")
            #expect(empty.status == 200)
            #expect(empty.header("Content-Type") == "application/octet-stream")
            #expect(empty.header("Content-Length") == "0")
            #expect(empty.body.isEmpty)
        }
    }

    @Test func headSendsTheHeadersWithoutTheBody() throws {
        try withServer { (server: HTTPServer) throws in
            let get = try RawHTTPClient.send(port: server.boundPort, target: "/x")
            let head = try RawHTTPClient.send(port: server.boundPort, method: "HEAD", target: "/x")
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
            #expect(head.header("Content-Type") == "text/plain; charset=utf-8")
            #expect(head.header("Content-Length") == String(get.body.count + 1))  // echo says HEAD, not GET
        }
    }

    @Test func loopbackAddressBindsLoopbackOnly() throws {
        try withServer("127.0.0.1:0") { (server: HTTPServer) throws in
            #expect(server.boundPort > 0)
            #expect(server.boundAddress == "127.0.0.1:\(server.boundPort)")
            #expect(try RawHTTPClient.send(port: server.boundPort, target: "/").status == 200)
            if let other = nonLoopbackIPv4Address() {
                #expect(connectError(host: other, port: server.boundPort) == ECONNREFUSED)
            }
            if hasIPv6Loopback {
                #expect(connectError(host: "::1", port: server.boundPort) == ECONNREFUSED)
            }
        }
    }

    @Test func emptyHostListensOnIPv4AndIPv6() throws {
        try withServer(":0") { (server: HTTPServer) throws in
            #expect(try RawHTTPClient.send(host: "127.0.0.1", port: server.boundPort, target: "/").status == 200)
            if hasIPv6Loopback {
                #expect(server.boundAddress == "[::]:\(server.boundPort)")
                #expect(try RawHTTPClient.send(host: "::1", port: server.boundPort, target: "/").status == 200)
            }
        }
    }

    @Test func anyIPv4AddressListensOnIPv4Only() throws {
        try withServer("0.0.0.0:0") { (server: HTTPServer) throws in
            #expect(server.boundAddress == "0.0.0.0:\(server.boundPort)")
            #expect(try RawHTTPClient.send(host: "127.0.0.1", port: server.boundPort, target: "/").status == 200)
            if hasIPv6Loopback {
                #expect(connectError(host: "::1", port: server.boundPort) == ECONNREFUSED)
            }
        }
    }

    @Test(.enabled(if: hasIPv6Loopback)) func ipv6LoopbackAddressBindsIPv6LoopbackOnly() throws {
        try withServer("[::1]:0") { (server: HTTPServer) throws in
            #expect(server.boundAddress == "[::1]:\(server.boundPort)")
            #expect(try RawHTTPClient.send(host: "::1", port: server.boundPort, target: "/").status == 200)
            #expect(connectError(host: "127.0.0.1", port: server.boundPort) == ECONNREFUSED)
        }
    }

    @Test func hostNameListensOnItsFirstAddress() throws {
        try withServer("localhost:0") { (server: HTTPServer) throws in
            let bound = try #require(server.boundAddress)
            let host = bound.hasPrefix("[") ? "::1" : "127.0.0.1"
            #expect(bound == (host == "::1" ? "[::1]:\(server.boundPort)" : "127.0.0.1:\(server.boundPort)"))
            #expect(try RawHTTPClient.send(host: host, port: server.boundPort, target: "/").status == 200)
        }
    }

    @Test(arguments: [
        ("9818", #"invalid listen address "9818": missing port; expected [host]:port, e.g. ":9818""#),
        ("host:", #"invalid listen address "host:": missing port; expected [host]:port, e.g. ":9818""#),
        (":99999", #"invalid listen address ":99999": port 99999 is out of range 0-65535"#),
        (":abc", #"invalid listen address ":abc": port "abc" is not a number"#),
    ])
    func startRejectsBadAddresses(address: String, message: String) {
        let server = HTTPServer(listenAddress: address, handler: echo)
        let error = #expect(throws: HTTPServerError.self) { try server.start() }
        #expect(error?.description == message)
        #expect(server.boundPort == 0)
    }

    @Test func startRejectsAnUnresolvableHost() {
        let server = HTTPServer(listenAddress: "nosuch.invalid:9818", handler: echo)
        let error = #expect(throws: HTTPServerError.self) { try server.start() }
        let prefix = #"invalid listen address "nosuch.invalid:9818": cannot resolve host "nosuch.invalid": "#
        #expect(error?.description.hasPrefix(prefix) == true)
    }

    @Test func portInUseIsABindFailure() throws {
        try withServer("127.0.0.1:0") { (first: HTTPServer) throws in
            let address = "127.0.0.1:\(first.boundPort)"
            let second = HTTPServer(listenAddress: address, handler: echo)
            let error = #expect(throws: HTTPServerError.self) { try second.start() }
            #expect(error == .bindFailed(address, reason: "Address already in use"))
            #expect(error?.description == "cannot listen on \"\(address)\": Address already in use")
        }
    }

    @Test func stopIsIdempotentAndTheServerCanStartAgain() throws {
        let server = HTTPServer(listenAddress: "127.0.0.1:0", handler: echo)
        try server.start()
        let port = server.boundPort
        #expect(try RawHTTPClient.send(port: port, target: "/").status == 200)
        server.stop()
        server.stop()
        #expect(server.boundPort == 0)
        #expect(connectError(host: "127.0.0.1", port: port) == ECONNREFUSED)

        try server.start()
        defer { server.stop() }
        #expect(try RawHTTPClient.send(port: server.boundPort, target: "/").status == 200)
    }

    @Test func answersTwoHundredConcurrentRequestsFromEightThreads() throws {
        try withServer { (server: HTTPServer) throws in
            let port = server.boundPort
            let answered = Lock<[Int: Int]>([:])  // status -> count
            let failures = Lock<[String]>([])
            let group = DispatchGroup()
            for thread in 0..<8 {
                group.enter()
                Thread.detachNewThread {
                    defer { group.leave() }
                    for request in 0..<25 {
                        do {
                            let response = try RawHTTPClient.send(port: port, target: "/t\(thread)?r=\(request)")
                            let expected = "query r=\(request)\n"
                            let status = response.text.contains(expected) ? response.status : -1
                            answered.withLock { $0[status, default: 0] += 1 }
                        } catch {
                            failures.withLock { $0.append("\(error)") }
                        }
                    }
                }
            }
            #expect(group.wait(timeout: .now() + 60) == .success)
            #expect(failures.withLock { $0 } == [])
            #expect(answered.withLock { $0 } == [200: 200])
        }
    }
}
