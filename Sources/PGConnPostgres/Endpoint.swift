import Glibc
import PGConnCore

/// Where a session's single server listens, as a numeric address or a socket path: what the monitor checks
/// while a session backs off after a refused connect (``SessionStateMachine/isWaitingOnReachability``).
///
/// Sessions on the same server (thousands of targets behind one PgBouncer, say) share one endpoint, so the
/// server is checked once per interval whatever the number of targets.
package enum Endpoint: Hashable, Sendable, CustomStringConvertible {
    case tcp(address: String, port: UInt16)
    /// A Unix-domain socket: the directory's `.s.PGSQL.<port>`.
    case unix(path: String)

    /// The endpoint of a connect from libpq's effective `values` and the `hostaddr` the lookup gave, or `nil`
    /// when it cannot be told without libpq (several hosts or ports, the default socket directory, an abstract
    /// socket): those sessions simply wait out their backoff.
    package static func of(values: [String: String], hostaddr: String?) -> Endpoint? {
        let portText = values["port"].flatMap { $0.isEmpty ? nil : $0 } ?? "5432"
        guard let port = UInt16(portText) else { return nil }
        let address = hostaddr.flatMap { $0.isEmpty ? nil : $0 } ?? values["hostaddr"].flatMap { $0.isEmpty ? nil : $0 }
        let host = values["host"] ?? ""
        if host.contains(",") || address?.contains(",") == true { return nil }
        if let address { return HostResolver.isNumeric(address) ? .tcp(address: address, port: port) : nil }
        if host.hasPrefix("/") { return .unix(path: "\(host)/.s.PGSQL.\(port)") }
        return HostResolver.isNumeric(host) ? .tcp(address: host, port: port) : nil
    }

    package var description: String {
        switch self {
        case .tcp(let address, let port): address.contains(":") ? "[\(address)]:\(port)" : "\(address):\(port)"
        case .unix(let path): path
        }
    }

    /// Whether a connect to the endpoint completes within `timeout`: the server listens. Blocks up to `timeout`
    /// (run it on a worker). The socket is closed at once without a byte sent: a refused one costs the server
    /// nothing, an accepted one a backend that exits without an error (logged only with `log_connections`).
    package static func accepts(_ endpoint: Endpoint, timeout: Duration) -> Bool {
        switch endpoint {
        case .tcp(let address, let port):
            var v4 = sockaddr_in()
            if inet_pton(AF_INET, address, &v4.sin_addr) == 1 {
                v4.sin_family = sa_family_t(AF_INET)
                v4.sin_port = port.bigEndian
                return withUnsafeBytes(of: &v4) { connects(family: AF_INET, $0, timeout: timeout) }
            }
            var v6 = sockaddr_in6()
            guard inet_pton(AF_INET6, address, &v6.sin6_addr) == 1 else { return false }
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            return withUnsafeBytes(of: &v6) { connects(family: AF_INET6, $0, timeout: timeout) }
        case .unix(let path):
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return false }
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
            return withUnsafeBytes(of: &address) { connects(family: AF_UNIX, $0, timeout: timeout) }
        }
    }

    private static func connects(family: Int32, _ address: UnsafeRawBufferPointer, timeout: Duration) -> Bool {
        let fd = socket(
            family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { Glibc.close(fd) }
        let sockaddrPointer = address.baseAddress!.assumingMemoryBound(to: sockaddr.self)
        // No errno read (the runtime may change it first): whether the connect is done, failed at once, or in
        // progress, the socket is writable after it, and connected only if it has a peer.
        if connect(fd, sockaddrPointer, socklen_t(address.count)) == 0 { return true }
        var ready = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let milliseconds = Int32(clamping: max(1, timeout.nanoseconds / 1_000_000))
        guard poll(&ready, 1, milliseconds) == 1 else { return false }
        var pending: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &pending, &length) == 0, pending == 0 else { return false }
        var peer = sockaddr_storage()
        var peerLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &peer) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getpeername(fd, $0, &peerLength) == 0 }
        }
    }
}
