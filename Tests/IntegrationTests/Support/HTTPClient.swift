import Foundation

/// One HTTP response as read off the wire.
///
/// Header names are lowercased (HTTP names are case-insensitive); a repeated header keeps its last value.
/// `body` is the payload after de-chunking, undecoded (gzip stays gzip); `text` is it read as UTF-8.
struct RawHTTPResponse: Sendable {
    var status: Int
    var headers: [String: String]
    var body: Data
    var text: String { String(decoding: body, as: UTF8.self) }
}

/// Why an HTTP exchange failed: connect, timeout, or a response that does not parse.
struct HTTPClientError: Error, CustomStringConvertible {
    var description: String
}

/// GETs `path` from 127.0.0.1:`port` and returns status, lowercased headers and the body as text.
///
/// A raw blocking socket, HTTP/1.1 with `Connection: close`, so nothing but the server under test is
/// involved. `timeout` bounds each read and write (and so a server that never answers).
func httpGet(
    port: Int, path: String, headers: [String: String] = [:], timeout: Duration = .seconds(5)
) throws -> (status: Int, headers: [String: String], body: String) {
    let response = try httpRequest(port: port, path: path, headers: headers, timeout: timeout)
    return (response.status, response.headers, response.text)
}

/// Sends one request with any method and body to 127.0.0.1:`port` and reads the whole response.
func httpRequest(
    method: String = "GET", port: Int, path: String, headers: [String: String] = [:], body: Data = Data(),
    timeout: Duration = .seconds(5)
) throws -> RawHTTPResponse {
    let fd = try SocketIO.connect(port: port)
    defer { close(fd) }
    var time = timeval(
        tv_sec: Int(timeout.components.seconds),
        tv_usec: Int(timeout.components.attoseconds / 1_000_000_000_000))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &time, socklen_t(MemoryLayout<timeval>.size))

    var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n"
    for (name, value) in headers.sorted(by: { $0.key < $1.key }) { head += "\(name): \(value)\r\n" }
    if !body.isEmpty || method == "POST" || method == "PUT" { head += "Content-Length: \(body.count)\r\n" }
    head += "\r\n"
    let request = Data(head.utf8) + body
    let sent = request.withUnsafeBytes { SocketIO.writeAll(fd, $0) }
    guard sent else {
        throw HTTPClientError(description: "\(method) \(path): send failed: \(String(cString: strerror(errno)))")
    }

    var raw = Data()
    var buffer = [UInt8](repeating: 0, count: 65536)
    while true {
        let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        if count == 0 { break }
        if count < 0 {
            if errno == EINTR { continue }
            if errno == EAGAIN || errno == EWOULDBLOCK {
                throw HTTPClientError(description: "\(method) \(path): no complete response within \(timeout)")
            }
            throw HTTPClientError(description: "\(method) \(path): recv failed: \(String(cString: strerror(errno)))")
        }
        raw.append(contentsOf: buffer[0..<count])
    }
    return try parseHTTPResponse(raw, context: "\(method) \(path)")
}

/// Splits a complete HTTP/1.1 response (the connection was closed after it) into its parts.
func parseHTTPResponse(_ raw: Data, context: String) throws -> RawHTTPResponse {
    guard let split = raw.range(of: Data("\r\n\r\n".utf8)) else {
        throw HTTPClientError(description: "\(context): response has no header end (\(raw.count) bytes)")
    }
    let headText = String(decoding: raw[raw.startIndex..<split.lowerBound], as: UTF8.self)
    var lines = headText.components(separatedBy: "\r\n")
    let statusLine = lines.removeFirst()
    let statusParts = statusLine.split(separator: " ", maxSplits: 2)
    guard statusParts.count >= 2, statusParts[0].hasPrefix("HTTP/1."), let status = Int(statusParts[1]) else {
        throw HTTPClientError(description: "\(context): bad status line \(statusLine.debugDescription)")
    }
    var headers: [String: String] = [:]
    for line in lines {
        guard let colon = line.firstIndex(of: ":") else { continue }
        let name = line[..<colon].lowercased()
        headers[name] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
    }
    var body = Data(raw[split.upperBound...])
    if headers["transfer-encoding"]?.lowercased().contains("chunked") == true {
        body = try dechunk(body, context: context)
    } else if let length = headers["content-length"].flatMap(Int.init), length < body.count {
        body = body.prefix(length)
    }
    return RawHTTPResponse(status: status, headers: headers, body: body)
}

/// Decodes a `Transfer-Encoding: chunked` body (chunk extensions and trailers are ignored).
private func dechunk(_ data: Data, context: String) throws -> Data {
    var output = Data()
    var index = data.startIndex
    let crlf = Data("\r\n".utf8)
    while true {
        guard let lineEnd = data.range(of: crlf, in: index..<data.endIndex) else {
            throw HTTPClientError(description: "\(context): truncated chunked body")
        }
        let sizeText = String(decoding: data[index..<lineEnd.lowerBound], as: UTF8.self)
        guard let size = Int(sizeText.split(separator: ";")[0].trimmingCharacters(in: .whitespaces), radix: 16)
        else {
            throw HTTPClientError(description: "\(context): bad chunk size \(sizeText.debugDescription)")
        }
        if size == 0 { return output }
        let start = lineEnd.upperBound
        guard data.distance(from: start, to: data.endIndex) >= size + 2 else {
            throw HTTPClientError(description: "\(context): truncated chunk of \(size) bytes")
        }
        let end = data.index(start, offsetBy: size)
        output.append(data[start..<end])
        index = data.index(end, offsetBy: 2)
    }
}

/// `eventually` gave up: the condition never held (or kept throwing) until the deadline.
struct EventuallyTimeout: Error, CustomStringConvertible {
    var description: String
}

/// Re-evaluates `condition` every `poll` until it returns true; throws ``EventuallyTimeout`` after `timeout`.
///
/// An error thrown by `condition` counts as "not yet" (a server still starting refuses connections); the last
/// one is quoted in the timeout message, with the caller's file and line. Polls on the calling thread.
func eventually(
    timeout: Duration, poll: Duration = .milliseconds(50), file: StaticString = #fileID, line: UInt = #line,
    _ condition: () throws -> Bool
) throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    var lastError: (any Error)?
    while true {
        do {
            if try condition() { return }
            lastError = nil
        } catch {
            lastError = error
        }
        if clock.now >= deadline { break }
        Thread.sleep(forTimeInterval: poll.timeInterval)
    }
    throw EventuallyTimeout(description: eventuallyMessage(timeout, lastError, file, line))
}

/// The `async` form of ``eventually(timeout:poll:file:line:_:)``: sleeps with `Task.sleep` between polls,
/// so a waiting test does not hold a cooperative thread.
func eventually(
    timeout: Duration, poll: Duration = .milliseconds(50), file: StaticString = #fileID, line: UInt = #line,
    _ condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    var lastError: (any Error)?
    while true {
        do {
            if try await condition() { return }
            lastError = nil
        } catch {
            lastError = error
        }
        if clock.now >= deadline { break }
        try await Task.sleep(for: poll)
    }
    throw EventuallyTimeout(description: eventuallyMessage(timeout, lastError, file, line))
}

private func eventuallyMessage(_ timeout: Duration, _ lastError: (any Error)?, _ file: StaticString, _ line: UInt)
    -> String
{
    var message = "condition at \(file):\(line) not met within \(timeout)"
    if let lastError { message += " (last error: \(lastError))" }
    return message
}
