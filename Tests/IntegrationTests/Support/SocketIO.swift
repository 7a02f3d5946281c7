import Foundation

/// Small blocking-socket operations shared by the listener, the proxy and the HTTP client (loopback only).
enum SocketIO {
    /// A TCP socket bound to 127.0.0.1:`port` (0 picks a free port, `SO_REUSEADDR` set) and the port it got.
    static func bind(port: Int) throws -> (fd: Int32, port: Int) {
        let fd = try loopbackSocket(port: port, "bind") { fd, address, length in
            var yes: Int32 = 1
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
            return Glibc.bind(fd, address, length)
        }
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (fd, Int(UInt16(bigEndian: address.sin_port)))
    }

    /// A listening TCP socket on 127.0.0.1:`port` (0 picks a free port) and the port it got.
    static func listen(port: Int = 0, backlog: Int32 = 128) throws -> (fd: Int32, port: Int) {
        let (fd, port) = try bind(port: port)
        guard Glibc.listen(fd, backlog) == 0 else {
            let error = SocketError("listen", errno)
            close(fd)
            throw error
        }
        return (fd, port)
    }

    /// A TCP connection to 127.0.0.1:`port`; blocking (loopback connects answer at once).
    static func connect(port: Int) throws -> Int32 {
        try loopbackSocket(port: port, "connect") { Glibc.connect($0, $1, $2) }
    }

    /// A TCP connection to 127.0.0.1:`port` from the loopback address 127.0.0.`source` (any of 127/8 is this
    /// host's, so one test can be many clients to a per-address limit).
    static func connect(port: Int, fromLoopback source: UInt8) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError("socket", errno) }
        var local = sockaddr_in.loopback(port: 0)
        local.sin_addr.s_addr = (UInt32(0x7F00_0000) | UInt32(source)).bigEndian
        var remote = sockaddr_in.loopback(port: port)
        let size = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, size) }
        }
        let connected =
            bound == 0
            ? withUnsafePointer(to: &remote) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, size) }
            } : -1
        guard connected == 0 else {
            let error = SocketError("connect 127.0.0.1:\(port) from 127.0.0.\(source)", errno)
            close(fd)
            throw error
        }
        return fd
    }

    /// A new close-on-exec TCP socket given to `call` (`bind` or `connect`) with the address 127.0.0.1:`port`;
    /// closed, and the failure thrown naming `operation`, unless `call` returns 0.
    private static func loopbackSocket(
        port: Int, _ operation: String, _ call: (Int32, UnsafePointer<sockaddr>, socklen_t) -> Int32
    ) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SocketError("socket", errno) }
        var address = sockaddr_in.loopback(port: port)
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                call(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard result == 0 else {
            let error = SocketError("\(operation) 127.0.0.1:\(port)", errno)
            close(fd)
            throw error
        }
        return fd
    }

    /// Accepts one connection, close-on-exec so child processes never inherit it (Glibc lacks `accept4`).
    static func accept(_ listenFD: Int32) -> Int32? {
        let fd = Glibc.accept(listenFD, nil, nil)
        guard fd >= 0 else { return nil }
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
        return fd
    }

    /// Writes all of `bytes`, retrying short writes; false if the peer is gone.
    static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = send(fd, bytes.baseAddress! + offset, bytes.count - offset, Int32(MSG_NOSIGNAL))
            if written < 0 && errno == EINTR { continue }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }

    /// Closes `fd` with an RST instead of a FIN (SO_LINGER with a zero timeout).
    static func closeWithReset(_ fd: Int32) {
        var option = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
        close(fd)
    }

    /// A pipe whose write end wakes a thread blocked in `poll` on its read end.
    static func makeWakePipe() throws -> (read: Int32, write: Int32) {
        var fds: [Int32] = [0, 0]
        guard pipe(&fds) == 0 else { throw SocketError("pipe", errno) }
        for fd in fds {
            _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
            _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        }
        return (fds[0], fds[1])
    }

    static func wake(_ fd: Int32) {
        var byte: UInt8 = 1
        _ = write(fd, &byte, 1)
    }

    static func drain(_ fd: Int32) {
        var buffer = [UInt8](repeating: 0, count: 64)
        while read(fd, &buffer, buffer.count) > 0 {}
    }
}

/// A failed socket call: the operation and `strerror(errno)`.
struct SocketError: Error, CustomStringConvertible {
    var description: String
    var code: Int32

    init(_ operation: String, _ code: Int32) {
        self.code = code
        self.description = "\(operation): \(String(cString: strerror(code)))"
    }
}

/// Runs `body` on a new thread and lets the caller wait for it to finish.
final class JoinableThread: Sendable {
    private let finished = DispatchSemaphore(value: 0)

    init(name: String, _ body: @escaping @Sendable () -> Void) {
        let finished = self.finished
        let thread = Thread {
            body()
            finished.signal()
        }
        thread.name = name
        thread.start()
    }

    /// Blocks until the body has returned. Call once.
    func join() { finished.wait() }
}

extension sockaddr_in {
    /// 127.0.0.1:`port` (host byte order in, network byte order stored).
    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }
}
