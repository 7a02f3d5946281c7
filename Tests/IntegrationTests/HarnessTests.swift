import Foundation
import Testing

/// The integration harness itself: a real throwaway PostgreSQL, the black hole and the proxy.
@Suite(.serialized)
struct HarnessTests {
    @Test func startsAndRunsSQLOverTheUnixSocket() throws {
        let server = try TestPostgres.start(settings: ["max_connections": "7", "cluster_name": "it's"])
        defer { server.cleanup() }

        #expect(try server.psql("select 1") == "1")
        #expect(try server.psql("show max_connections") == "7")
        #expect(try server.psql("show cluster_name") == "it's")
        #expect(try server.psql("create database other; select 2") == "2")
        #expect(try server.psql("select current_database()", database: "other") == "other")
        #expect(server.socketDir.path.hasPrefix(server.rootDir.path))
        #expect(
            FileManager.default.fileExists(
                atPath: server.socketDir.appendingPathComponent(".s.PGSQL.\(server.port)").path))
    }

    @Test func psqlThrowsWithTheServerError() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }

        let error = #expect(throws: TestPostgresError.self) { try server.psql("select nope") }
        #expect(error?.description.contains(#"ERROR:  column "nope" does not exist"#) == true)
    }

    @Test func tcpLoginNeedsTheSuperuserPassword() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }

        let args = [
            "-X", "-A", "-t", "-h", "127.0.0.1", "-p", String(server.port), "-U", "postgres", "-d", "postgres",
            "-c", "select current_user",
        ]
        let good = try runCommand(server.binary("psql"), args, environment: ["PGPASSWORD": server.superuserPassword])
        #expect(good.status == 0)
        #expect(good.stdout == "postgres\n")

        let bad = try runCommand(server.binary("psql"), args, environment: ["PGPASSWORD": "wrong"])
        #expect(bad.status == 2)
        #expect(bad.stderr.contains(#"FATAL:  password authentication failed for user "postgres""#))

        let dsn = server.dsn(password: server.superuserPassword)
        #expect(
            dsn == "host=127.0.0.1 port=\(server.port) user=postgres dbname=postgres password=pgconn-test-superuser")
        let viaDSN = try runCommand(server.binary("psql"), ["-X", "-A", "-t", "-d", dsn, "-c", "select 3"])
        #expect(viaDSN.stdout == "3\n")
        #expect(
            server.dsn(user: "a b", password: "it's", database: "d")
                == #"host=127.0.0.1 port=\#(server.port) user='a b' dbname=d password='it\'s'"#)
    }

    @Test func immediateStopAndRestartKeepData() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        try server.psql("create table t (v int); insert into t values (42)")
        let firstPID = try #require(server.postmasterPID)

        try server.stopImmediate()
        #expect(server.postmasterPID == nil)
        #expect(kill(firstPID, 0) == -1 && errno == ESRCH)
        #expect(throws: TestPostgresError.self) { try server.psql("select 1", timeout: .seconds(10)) }

        try server.start()
        #expect(try server.psql("select v from t") == "42")
        #expect(server.postmasterPID != firstPID)

        try server.stopFast()
        #expect(server.postmasterPID == nil)
        try server.start()
        #expect(try server.psql("select count(*) from t") == "1")
        #expect(server.serverLog().contains("database system was interrupted"))
    }

    @Test func cleanupLeavesNoProcessAndNoFiles() throws {
        let server = try TestPostgres.start()
        let pid = try #require(server.postmasterPID)
        let backends = try server.psql("select count(*) from pg_stat_activity where backend_type = 'checkpointer'")
        #expect(backends == "1")

        server.cleanup()
        #expect(kill(pid, 0) == -1 && errno == ESRCH)
        #expect(!FileManager.default.fileExists(atPath: server.rootDir.path))
        #expect(try runCommand("/usr/bin/pgrep", ["-f", server.dataDir.path]).status == 1)
        server.cleanup()  // Idempotent.
        #expect(throws: TestPostgresError.self) { try server.start() }
    }

    @Test func freePortIsBindable() throws {
        let port = TestPostgres.freePort()
        #expect(port > 0 && port < 65536)
        let (fd, bound) = try SocketIO.listen(port: port)
        close(fd)
        #expect(bound == port)
    }

    @Test func blackholeAcceptsButNeverAnswers() throws {
        let blackhole = try BlackholeListener()
        defer { blackhole.close() }

        let client = try SocketIO.connect(port: blackhole.port)
        defer { close(client) }
        try eventually(timeout: .seconds(5)) { blackhole.acceptedCount == 1 }
        #expect(Self.send(client, Self.sslRequest))
        #expect(try Self.receive(client, within: .milliseconds(300)) == .timedOut)

        // Closing a socket with unread data sends an RST, not a FIN.
        blackhole.close()
        #expect(try Self.receive(client, within: .seconds(5)) == .reset)
        blackhole.close()  // Idempotent.
    }

    @Test func proxyForwardsBlackholesAndResets() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let proxy = try TCPProxy(upstreamPort: server.port)
        defer { proxy.close() }

        // Forward: PostgreSQL answers an SSLRequest with 'N' (no TLS configured).
        let client = try SocketIO.connect(port: proxy.port)
        defer { close(client) }
        #expect(Self.send(client, Self.sslRequest))
        #expect(try Self.receive(client, within: .seconds(5)) == .data([UInt8(ascii: "N")]))

        // A full login through the proxy.
        let login = try runCommand(
            server.binary("psql"),
            ["-X", "-A", "-t", "-d", "host=127.0.0.1 port=\(proxy.port) user=postgres", "-c", "select 5"],
            environment: ["PGPASSWORD": server.superuserPassword])
        #expect(login.stdout == "5\n")

        // Black hole: the request is held, the socket stays open, a new client hangs too.
        proxy.setMode(.blackhole)
        #expect(proxy.mode == .blackhole)
        let second = try SocketIO.connect(port: proxy.port)
        defer { close(second) }
        #expect(Self.send(second, Self.sslRequest))
        #expect(try Self.receive(second, within: .milliseconds(300)) == .timedOut)
        let timedOut = try runCommand(
            server.binary("psql"),
            ["-X", "-d", "host=127.0.0.1 port=\(proxy.port) user=postgres connect_timeout=1", "-c", "select 1"],
            environment: ["PGPASSWORD": server.superuserPassword])
        #expect(timedOut.status == 2)
        #expect(timedOut.stderr.contains("timeout expired"))

        // Forward again: the buffered request goes through.
        proxy.setMode(.forward)
        #expect(try Self.receive(second, within: .seconds(5)) == .data([UInt8(ascii: "N")]))

        // Reset: every client gets an RST at once, new ones too.
        proxy.setMode(.reset)
        #expect(try Self.receive(second, within: .seconds(5)) == .reset)
        #expect(proxy.openConnections == 0)
        let third = try SocketIO.connect(port: proxy.port)
        defer { close(third) }
        #expect(try Self.receive(third, within: .seconds(5)) == .reset)
        #expect(proxy.acceptedCount >= 4)
    }

    /// The proxy's slow and broken modes, with psql and raw sockets through it: latency and throttling slow
    /// exchanges down by at least what they promise, a cut ends a large result in the middle, and refusing
    /// leaves the connections held to go on.
    @Test func proxyDelaysThrottlesCutsAndRefuses() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let proxy = try TCPProxy(upstreamPort: server.port)
        defer { proxy.close() }
        let clock = ContinuousClock()
        func psql(_ sql: String) throws -> CommandResult {
            try runCommand(
                server.binary("psql"),
                ["-X", "-A", "-t", "-d", "host=127.0.0.1 port=\(proxy.port) user=postgres sslmode=disable", "-c", sql],
                environment: ["PGPASSWORD": server.superuserPassword])
        }

        // Latency: 300 ms each way, so an SSLRequest's answer takes at least 600 ms.
        proxy.setMode(.latency(.milliseconds(300), jitter: .milliseconds(50)))
        let client = try SocketIO.connect(port: proxy.port)
        defer { close(client) }
        var start = clock.now
        #expect(Self.send(client, Self.sslRequest))
        #expect(try Self.receive(client, within: .seconds(5)) == .data([UInt8(ascii: "N")]))
        let roundTrip = clock.now - start
        #expect(roundTrip >= .milliseconds(600), "\(roundTrip)")

        // Throttle: 100,000 bytes of result at 50,000 bytes a second take at least 1.5 s.
        proxy.setMode(.throttle(bytesPerSecond: 50_000))
        start = clock.now
        let slow = try psql("SELECT length(repeat('x', 100000)) || repeat('x', 100000)")
        let throttled = clock.now - start
        #expect(slow.status == 0, "\(slow.stderr)")
        #expect(slow.stdout.hasPrefix("100000x"))
        #expect(throttled >= .milliseconds(1500), "\(throttled)")

        // Refuse: new clients are refused; the connection held goes on (a second SSLRequest on it gets the
        // server's error: any answer shows it is still forwarded).
        proxy.setMode(.refuse)
        #expect(throws: (any Error).self) { close(try SocketIO.connect(port: proxy.port)) }
        #expect(Self.send(client, Self.sslRequest))
        let answer = try Self.receive(client, within: .seconds(5))
        #expect({ if case .data(let bytes) = answer { !bytes.isEmpty } else { false } }(), "\(answer)")
        proxy.setMode(.forward)
        #expect(try psql("SELECT 7").stdout == "7\n", "listening again on the same port")

        // Cut after 20,000 bytes from the server: a 200,000-byte result ends in the middle.
        proxy.setMode(.dropAfter(bytes: 20_000))
        let cut = try psql("SELECT repeat('x', 200000)")
        #expect(cut.status != 0)
        #expect(
            cut.stderr.contains("server closed the connection unexpectedly")
                || cut.stderr.contains("connection to server was lost") || cut.stderr.contains("Connection reset"),
            "\(cut.stderr)")
        try eventually(timeout: .seconds(5)) { proxy.openConnections <= 1 }  // the raw client from above
        proxy.setMode(.forward)
        #expect(try psql("SELECT 8").stdout == "8\n")
    }

    @Test func httpGetParsesPlainAndChunkedResponses() throws {
        let plain = try parseHTTPResponse(
            Data(
                ("HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\n"
                    + "Content-Length: 5\r\n\r\ndown\nx").utf8),
            context: "GET /health")
        #expect(plain.status == 503)
        #expect(plain.headers["content-type"] == "text/plain")
        #expect(plain.text == "down\n")

        let chunked = try parseHTTPResponse(
            Data("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nup 1\r\n1;x=y\r\n\n\r\n0\r\n\r\n".utf8),
            context: "GET /metrics")
        #expect(chunked.text == "up 1\n")

        let error = #expect(throws: HTTPClientError.self) {
            try parseHTTPResponse(Data("garbage".utf8), context: "GET /")
        }
        #expect(error?.description == "GET /: response has no header end (7 bytes)")
    }

    @Test func httpGetTalksToARealSocketAndTimesOut() throws {
        let blackhole = try BlackholeListener()
        defer { blackhole.close() }
        let error = #expect(throws: HTTPClientError.self) {
            try httpGet(port: blackhole.port, path: "/metrics", timeout: .milliseconds(200))
        }
        #expect(error?.description == "GET /metrics: no complete response within 0.2 seconds")

        let refused = TestPostgres.freePort()
        let connectError = #expect(throws: SocketError.self) { try httpGet(port: refused, path: "/") }
        #expect(connectError?.description == "connect 127.0.0.1:\(refused): Connection refused")
    }

    @Test func eventuallyReportsTheLastError() async throws {
        var calls = 0
        try eventually(timeout: .seconds(5), poll: .milliseconds(1)) {
            calls += 1
            return calls == 3
        }
        #expect(calls == 3)

        let error = #expect(throws: EventuallyTimeout.self) {
            try eventually(timeout: .milliseconds(20), poll: .milliseconds(5), file: "X.swift", line: 7) {
                throw HTTPClientError(description: "not yet")
            }
        }
        #expect(error?.description == "condition at X.swift:7 not met within 0.02 seconds (last error: not yet)")

        var asyncCalls = 0
        try await eventually(timeout: .seconds(5), poll: .milliseconds(1)) {
            await Task.yield()
            asyncCalls += 1
            return asyncCalls == 2
        }
        #expect(asyncCalls == 2)
    }

    // MARK: Raw socket steps

    /// PostgreSQL's SSLRequest: length 8, code 80877103. The server answers one byte, 'S' or 'N'.
    static let sslRequest: [UInt8] = [0, 0, 0, 8, 0x04, 0xD2, 0x16, 0x2F]

    enum Received: Equatable {
        case data([UInt8])
        case timedOut
        case closed
        case reset
    }

    static func send(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { SocketIO.writeAll(fd, $0) }
    }

    /// Waits up to `within` for something on `fd`: data, an orderly close, an RST, or nothing.
    static func receive(_ fd: Int32, within: Duration) throws -> Received {
        var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        let ready = poll(
            &descriptor, 1,
            Int32(within.components.seconds * 1000 + within.components.attoseconds / 1_000_000_000_000_000))
        guard ready > 0 else { return .timedOut }
        var buffer = [UInt8](repeating: 0, count: 256)
        let count = recv(fd, &buffer, buffer.count, 0)
        if count > 0 { return .data(Array(buffer[0..<count])) }
        if count == 0 { return .closed }
        if errno == ECONNRESET { return .reset }
        throw SocketError("recv", errno)
    }
}
