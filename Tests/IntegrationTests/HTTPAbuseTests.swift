import Foundation
import Glibc
import PGConnSync
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

    /// Requests that never finish, as slow or half-open clients leave them.
    static let stalls: [[UInt8]] = [
        [],  // connected, nothing sent
        Array("GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: ".utf8),  // headers never end (slowloris)
        Array("POST /-/reload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n".utf8),  // no body
        Array("POST /-/reload HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n".utf8),
    ]

    /// 1,000 stalled clients from 40 addresses (25 each, under the per-address limit of 64, so all of them hold
    /// a slot: 1,000 of the 1,024), a quarter of each kind of ``stalls``, while a target flaps. Meanwhile 200
    /// scrapes of `/metrics` and `/health` from another address, four at a time, each on a new connection, are
    /// answered, none slower than a second (the figures go to docs/reliability.md). The request deadline (10 s)
    /// would close the stalls later; the scrapes are over well before.
    @Test func aThousandStalledClientsLeaveScrapesAnswering() throws {
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        limit.rlim_cur = limit.rlim_max
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        try #require(limit.rlim_cur >= 2_048, "needs 2,048 descriptors (hard limit \(limit.rlim_max))")

        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let proxy = try TCPProxy(upstreamPort: server.port)
        defer { proxy.close() }
        let directory = try TemporaryDirectory()
        let password = TestPostgres.superuserPassword
        let (exporter, port) = try ExporterProcess.start(
            config: """
                defaults:
                  probe_interval: 200ms
                  probe_timeout: 150ms
                  backoff: {initial: 50ms, max: 200ms}
                targets:
                  - name: steady
                    dsn: host=127.0.0.1 port=\(server.port) user=postgres password=\(password) dbname=postgres
                  - name: flapping
                    dsn: host=127.0.0.1 port=\(proxy.port) user=postgres password=\(password) dbname=postgres
                """, in: directory)
        defer { exporter.kill() }
        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/-/ready").status == 200 }
        let restingFDs =
            ExporterProcessTests.value(try httpGet(port: port, path: "/metrics").body, "process_open_fds") ?? 0

        // The flapping: black hole and back every 300 ms, until the scrapes are done.
        let flapping = Lock(true)
        let flapper = Thread {
            var hole = false
            for _ in 0..<200 where flapping.withLock({ $0 }) {
                hole.toggle()
                proxy.setMode(hole ? .blackhole : .forward)
                Thread.sleep(forTimeInterval: 0.3)  // the flap period itself, not a wait for a condition
            }
            proxy.setMode(.forward)
        }
        flapper.start()
        defer { flapping.withLock { $0 = false } }

        var stalled: [Int32] = []
        defer { for fd in stalled { close(fd) } }
        for client in 0..<1_000 {
            let fd = try SocketIO.connect(port: port, fromLoopback: UInt8(2 + client % 40))
            let bytes = Self.stalls[client % Self.stalls.count]
            if !bytes.isEmpty { _ = bytes.withUnsafeBytes { SocketIO.writeAll(fd, $0) } }
            stalled.append(fd)
        }
        // The exporter holds them all (accepted, each a descriptor).
        try eventually(timeout: .seconds(5)) {
            let page = try httpGet(port: port, path: "/metrics").body
            return (ExporterProcessTests.value(page, "process_open_fds") ?? 0) >= restingFDs + 990
        }

        let latencies = Lock<[Duration]>([])
        let failures = Lock<[String]>([])
        let finished = DispatchGroup()
        for client in 0..<4 {
            finished.enter()
            Thread {
                defer { finished.leave() }
                for request in 0..<50 {
                    let path = request % 2 == 0 ? "/metrics" : "/health"
                    let start = ContinuousClock.now
                    do {
                        let status = try httpGet(port: port, path: path, timeout: .seconds(5)).status
                        latencies.withLock { $0.append(ContinuousClock.now - start) }
                        if status != 200 && !(path == "/health" && status == 503) {
                            failures.withLock { $0.append("\(path): \(status)") }
                        }
                    } catch {
                        failures.withLock { $0.append("\(path) from client \(client): \(error)") }
                    }
                }
            }.start()
        }
        #expect(finished.wait(timeout: .now() + 60) == .success, "the scrapes finished")
        flapping.withLock { $0 = false }

        let sorted = latencies.withLock { $0 }.sorted()
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 }.prefix(5))")
        #expect(sorted.count == 200)
        let p50 = sorted.isEmpty ? .zero : sorted[sorted.count / 2]
        let p99 = sorted.isEmpty ? .zero : sorted[min(sorted.count - 1, sorted.count * 99 / 100)]
        let slowest = sorted.last ?? .zero
        #expect(slowest < .seconds(1), "the slowest scrape beside 1,000 stalled clients took \(slowest)")
        // Still held when the scrapes were over: they really ran beside the stalls.
        let page = try httpGet(port: port, path: "/metrics").body
        #expect((ExporterProcessTests.value(page, "process_open_fds") ?? 0) >= restingFDs + 900)
        #expect(exporter.isRunning)
        print("1,000 stalled clients: 200 scrapes p50 \(p50), p99 \(p99), slowest \(slowest)")
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
