import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A failure of the test client, with the errno of the failed call.
struct RawHTTPClientError: Error, CustomStringConvertible {
    var operation: String
    var code: Int32

    var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// A response as read off the wire by `RawHTTPClient`.
struct RawHTTPResponse {
    var status: Int
    var headers: [(String, String)]
    var body: [UInt8]

    var text: String { String(decoding: body, as: UTF8.self) }

    func header(_ name: String) -> String? {
        headers.first { $0.0.lowercased() == name.lowercased() }?.1
    }
}

/// A minimal blocking HTTP/1.1 client for tests: one request per connection (`Connection: close`), the
/// response read until the server closes, so a body sent where none belongs (HEAD) would show.
enum RawHTTPClient {
    /// Sends one request to a numeric host ("127.0.0.1", "::1") and reads the whole response.
    ///
    /// `source` binds the client's end to that numeric address first (any of 127.0.0.0/8 is loopback on
    /// Linux, so "127.0.0.2" plays a second client); `timeout` bounds each send and receive.
    static func send(
        host: String = "127.0.0.1",
        port: Int,
        from source: String? = nil,
        timeout: Duration = .seconds(10),
        method: String = "GET",
        target: String,
        headers: [(String, String)] = [],
        body: [UInt8]? = nil
    ) throws -> RawHTTPResponse {
        let socket = try connect(host: host, port: port, from: source, timeout: timeout)
        defer { close(socket) }
        var head = "\(method) \(target) HTTP/1.1\r\nHost: \(host)\r\nConnection: close\r\n"
        for (name, value) in headers { head += "\(name): \(value)\r\n" }
        if let body { head += "Content-Length: \(body.count)\r\n" }
        head += "\r\n"
        return try exchange(on: socket, request: Array(head.utf8) + (body ?? []))
    }

    /// Writes raw request bytes on an open connection and reads the response until the server closes.
    static func exchange(on socket: Int32, request: [UInt8]) throws -> RawHTTPResponse {
        try sendAll(socket, request)
        return try parse(readAll(socket))
    }

    /// Opens a TCP connection with send and receive timeouts (10 s unless told), from a numeric `source`
    /// address when given; throws with ECONNREFUSED when nobody listens.
    static func connect(
        host: String,
        port: Int,
        from source: String? = nil,
        timeout: Duration = .seconds(10)
    ) throws -> Int32 {
        var hints = addrinfo()
        hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, String(port), &hints, &list) == 0, let address = list else {
            throw RawHTTPClientError(operation: "getaddrinfo \(host)", code: EINVAL)
        }
        defer { freeaddrinfo(list) }
        let socket = Glibc.socket(address.pointee.ai_family, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw RawHTTPClientError(operation: "socket", code: errno) }
        let (seconds, attoseconds) = timeout.components
        var time = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
        setsockopt(socket, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(socket, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
        if let source {
            var sourceList: UnsafeMutablePointer<addrinfo>?
            guard getaddrinfo(source, "0", &hints, &sourceList) == 0, let sourceAddress = sourceList else {
                close(socket)
                throw RawHTTPClientError(operation: "getaddrinfo \(source)", code: EINVAL)
            }
            defer { freeaddrinfo(sourceList) }
            guard bind(socket, sourceAddress.pointee.ai_addr, sourceAddress.pointee.ai_addrlen) == 0 else {
                let code = errno
                close(socket)
                throw RawHTTPClientError(operation: "bind \(source)", code: code)
            }
        }
        guard Glibc.connect(socket, address.pointee.ai_addr, address.pointee.ai_addrlen) == 0 else {
            let code = errno
            close(socket)
            throw RawHTTPClientError(operation: "connect \(host):\(port)", code: code)
        }
        return socket
    }

    /// Reads one response with a `Content-Length` off a connection the server keeps open (keep-alive).
    static func readResponse(on socket: Int32) throws -> RawHTTPResponse {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        for _ in 0..<10_000 {
            if let response = try? parse(received), let length = response.header("Content-Length").flatMap(Int.init),
                response.body.count >= length
            {
                return response
            }
            let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if count == 0 { break }
            if count < 0 {
                if errno == EINTR { continue }
                throw RawHTTPClientError(operation: "recv", code: errno)
            }
            received += buffer[..<count]
        }
        return try parse(received)
    }

    /// Reads and discards until the server closes the connection: true when it did (end of file or reset),
    /// false when the socket's receive timeout passed first.
    static func awaitClose(_ socket: Int32) -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        for _ in 0..<10_000 {
            let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if count == 0 { return true }
            if count < 0 {
                switch errno {
                case EINTR: continue
                case ECONNRESET: return true
                default: return false  // EAGAIN: the receive timeout
                }
            }
        }
        return false
    }

    static func sendAll(_ socket: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let count = bytes[sent...].withUnsafeBytes {
                Glibc.send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL))
            }
            if count < 0 {
                if errno == EINTR { continue }
                throw RawHTTPClientError(operation: "send", code: errno)
            }
            sent += count
        }
    }

    private static func readAll(_ socket: Int32) throws -> [UInt8] {
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
            if count == 0 { return received }
            if count < 0 {
                if errno == EINTR { continue }
                throw RawHTTPClientError(operation: "recv", code: errno)
            }
            received += buffer[..<count]
        }
    }

    private static func parse(_ bytes: [UInt8]) throws -> RawHTTPResponse {
        let cr = UInt8(ascii: "\r")
        let lf = UInt8(ascii: "\n")
        let endOfHeaders = (0..<max(0, bytes.count - 3)).first {
            bytes[$0] == cr && bytes[$0 + 1] == lf && bytes[$0 + 2] == cr && bytes[$0 + 3] == lf
        }
        guard let end = endOfHeaders else {
            throw RawHTTPClientError(operation: "parse: no end of headers in \(bytes.count) bytes", code: EPROTO)
        }
        let lines = String(decoding: bytes[..<end], as: UTF8.self).components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ", maxSplits: 2)
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
            throw RawHTTPClientError(operation: "parse: bad status line \(lines[0])", code: EPROTO)
        }
        let headers = lines.dropFirst().compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces))
        }
        return RawHTTPResponse(status: status, headers: headers, body: Array(bytes[(end + 4)...]))
    }
}
