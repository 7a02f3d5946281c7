#if canImport(Glibc)
import Glibc
#endif

/// A parsed `[host]:port` listen address in the form the Go exporters accept (`--web.listen-address`).
///
/// - `:9818` and `[::]:9818`: every interface, IPv6 and IPv4 (one dual-stack socket).
/// - `0.0.0.0:9818`: every IPv4 interface only.
/// - `127.0.0.1:9818`, `[::1]:9818`: that address only.
/// - `name:9818`: the first address `getaddrinfo` returns for `name`.
/// Port 0 asks the kernel for a free port. Parsing resolves names, so it may block on DNS.
struct ListenAddress: Sendable, Equatable {
    enum Host: Sendable, Equatable {
        case allInterfaces
        /// The four address bytes in network order.
        case ipv4([UInt8])
        /// The sixteen address bytes in network order, and the scope (interface) id of a link-local address.
        case ipv6([UInt8], scopeID: UInt32)
    }

    var host: Host
    var port: UInt16

    init(host: Host, port: UInt16) {
        self.host = host
        self.port = port
    }

    init(parsing text: String) throws(HTTPServerError) {
        func invalid(_ reason: String) -> HTTPServerError {
            .invalidListenAddress(text, reason: reason)
        }
        let hostPart: Substring
        let portPart: Substring
        let bracketed: Bool
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else {
                throw invalid("missing \"]\" after the IPv6 address")
            }
            let afterClose = text[text.index(after: close)...]
            guard afterClose.first == ":" else {
                throw invalid("missing port; expected [host]:port, e.g. \":9818\"")
            }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = afterClose.dropFirst()
            bracketed = true
        } else {
            guard let colon = text.lastIndex(of: ":") else {
                throw invalid("missing port; expected [host]:port, e.g. \":9818\"")
            }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
            bracketed = false
            if hostPart.contains(":") {
                throw invalid("an IPv6 address must be in brackets, e.g. \"[::1]:9818\"")
            }
        }
        self.port = try Self.parsePort(portPart, invalid: invalid)
        if hostPart.isEmpty || (bracketed && hostPart == "::") {
            self.host = .allInterfaces
        } else {
            self.host = try Self.resolve(String(hostPart), numericIPv6: bracketed, invalid: invalid)
        }
    }

    private static func parsePort(
        _ text: Substring,
        invalid: (String) -> HTTPServerError
    ) throws(HTTPServerError) -> UInt16 {
        guard !text.isEmpty else {
            throw invalid("missing port; expected [host]:port, e.g. \":9818\"")
        }
        guard text.allSatisfy({ $0.isASCII && $0.isNumber }) else {
            throw invalid("port \"\(text)\" is not a number")
        }
        guard let value = Int(text), value <= Int(UInt16.max) else {
            throw invalid("port \(text) is out of range 0-65535")
        }
        return UInt16(value)
    }

    /// Resolves a name or a numeric address with `getaddrinfo`; the first answer wins.
    private static func resolve(
        _ name: String,
        numericIPv6: Bool,
        invalid: (String) -> HTTPServerError
    ) throws(HTTPServerError) -> Host {
        var hints = addrinfo()
        hints.ai_family = numericIPv6 ? AF_INET6 : AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = numericIPv6 ? AI_NUMERICHOST : 0
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(name, nil, &hints, &list)
        defer { if let list { freeaddrinfo(list) } }
        guard status == 0, let first = list, let socketAddress = first.pointee.ai_addr else {
            if numericIPv6 {
                throw invalid("\"\(name)\" is not an IPv6 address")
            }
            let detail = status == 0 ? "no address" : String(cString: gai_strerror(status))
            throw invalid("cannot resolve host \"\(name)\": \(detail)")
        }
        // Unsafe pointer use: getaddrinfo guarantees ai_addr points at a sockaddr of ai_family's type.
        switch first.pointee.ai_family {
        case AF_INET:
            let ipv4 = UnsafeRawPointer(socketAddress).loadUnaligned(as: sockaddr_in.self)
            return .ipv4(withUnsafeBytes(of: ipv4.sin_addr) { Array($0) })
        case AF_INET6:
            let ipv6 = UnsafeRawPointer(socketAddress).loadUnaligned(as: sockaddr_in6.self)
            return .ipv6(withUnsafeBytes(of: ipv6.sin6_addr) { Array($0) }, scopeID: ipv6.sin6_scope_id)
        default:
            throw invalid("cannot resolve host \"\(name)\": no IPv4 or IPv6 address")
        }
    }

    /// Calls `body` with this address as a `sockaddr` for bind(2); nil for `.allInterfaces`, which
    /// libmicrohttpd binds itself (dual stack) from the port alone.
    func withSocketAddress<Result>(_ body: (UnsafePointer<sockaddr>?) -> Result) -> Result {
        switch host {
        case .allInterfaces:
            return body(nil)
        case .ipv4(let bytes):
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = port.bigEndian
            withUnsafeMutableBytes(of: &address.sin_addr) { $0.copyBytes(from: bytes) }
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0) }
            }
        case .ipv6(let bytes, let scopeID):
            var address = sockaddr_in6()
            address.sin6_family = sa_family_t(AF_INET6)
            address.sin6_port = port.bigEndian
            address.sin6_scope_id = scopeID
            withUnsafeMutableBytes(of: &address.sin6_addr) { $0.copyBytes(from: bytes) }
            return withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0) }
            }
        }
    }
}
