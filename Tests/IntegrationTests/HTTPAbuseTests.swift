import Foundation
import Testing

/// Malformed and hostile HTTP requests to the real exporter over raw sockets: each gets the right 4xx/5xx (or
/// none, for bytes that are not HTTP at all), the process neither crashes nor stops answering others.
@Suite(.serialized) struct HTTPAbuseTests {
    static let cases: [(name: String, request: [UInt8], status: String?)] = [
        ("HTTP/0.9", Array("GET /metrics\r\n".utf8), "400"),
        ("an HTTP/2 preface", Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8), "505"),
        (
            "a 100 kB URL",
            Array(("GET /" + String(repeating: "a", count: 100_000) + " HTTP/1.1\r\nHost: x\r\n\r\n").utf8), "414"
        ),
        (
            "a 100 kB header",
            Array(("GET / HTTP/1.1\r\nHost: x\r\nX-A: " + String(repeating: "b", count: 100_000) + "\r\n\r\n").utf8),
            "431"
        ),
        (
            "5,000 headers",
            Array(("GET / HTTP/1.1\r\nHost: x\r\n" + (0..<5000).map { "X-\($0): y\r\n" }.joined() + "\r\n").utf8), "431"
        ),
        ("an odd method", Array("BREW /metrics HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "405"),
        ("a path with ..", Array("GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "404"),
        ("bad percent-encoding", Array("GET /health/%zz%00%ff HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "404"),
        ("a NUL in the path", [UInt8]("GET /he".utf8) + [0] + [UInt8]("alth HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "404"),
        ("a bad since=", Array("GET /api/v1/events?since=%ff HTTP/1.1\r\nHost: x\r\n\r\n".utf8), "400"),
        (
            "a bad chunked body",
            Array("POST /-/reload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".utf8), "400"
        ),
        (
            "Expect: 100-continue and no body",
            Array("POST /-/reload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 100\r\n\r\n".utf8),
            "100"
        ),
        (
            "a TLS ClientHello on plain HTTP",
            [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xFC, 0x03, 0x03] + Array(repeating: 0, count: 50), nil
        ),
    ]

    @Test func malformedRequestsGetTheirStatusAndNothingElseStops() throws {
        let directory = try TemporaryDirectory()
        let (exporter, port) = try ExporterProcess.start(config: ExporterProcessTests.validConfig, in: directory)
        defer { exporter.kill() }
        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/-/healthy").status == 200 }

        var held: [Int32] = []
        defer { for fd in held { close(fd) } }
        for (name, request, expected) in Self.cases {
            let fd = try SocketIO.connect(port: port)
            _ = request.withUnsafeBytes { SocketIO.writeAll(fd, $0) }
            let status = Self.statusLine(fd, within: expected == nil ? .milliseconds(500) : .seconds(5))
            if let expected {
                #expect(status?.hasPrefix("HTTP/1.1 \(expected) ") == true, "\(name): \(status ?? "no answer")")
                close(fd)
            } else {
                #expect(status == nil, "\(name): \(status ?? "")")
                held.append(fd)  // kept open: the request deadline closes it, and meanwhile others are served
            }
            // Every other client is served meanwhile.
            #expect(try httpGet(port: port, path: "/-/healthy").status == 200, "after \(name)")
        }
        #expect(exporter.isRunning)
        #expect(try httpGet(port: port, path: "/metrics").body.contains("pgconn_up{target=\"db\"}"))
    }

    /// The first line the server answers, or nil if none arrives within `within` (or the connection closes first).
    static func statusLine(_ fd: Int32, within: Duration) -> String? {
        var received: [UInt8] = []
        let deadline = ContinuousClock.now + within
        var buffer = [UInt8](repeating: 0, count: 4096)
        while ContinuousClock.now < deadline {
            var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let wait = Int32(max(1, (deadline - ContinuousClock.now).milliseconds))
            guard poll(&poller, 1, wait) > 0 else { break }
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { break }
            received += buffer[0..<count]
            if let end = received.firstIndex(of: UInt8(ascii: "\r")) {
                return String(decoding: received[..<end], as: UTF8.self)
            }
        }
        return nil
    }
}
