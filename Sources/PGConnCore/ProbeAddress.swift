/// The `target` parameter of a module probe: `host`, `host:port`, `[ipv6]` or `[ipv6]:port`.
///
/// It comes from a URL, so ``parse(_:)`` is strict: the host ends up in a libpq connection string, and anything
/// libpq would read as more than one host name (`,`, a socket path, a URI, a keyword) or `inet_aton` would read
/// as an address in disguise (`2130706433`, `0x7f.1`, `010.0.0.1`) is refused before an allow rule sees it.
public struct ProbeAddress: Sendable, Hashable, CustomStringConvertible {
    /// The port when the parameter names none.
    public static let defaultPort = 5432

    /// Without brackets, lowercased (IPv6 hex digits too).
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// True when `host` is an IPv4 or IPv6 literal rather than a name.
    public var isIPLiteral: Bool { IPAddress(host) != nil }

    /// `host:port`, or `[v6]:port`.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// Parses the query parameter.
    ///
    /// The error is one line for an HTTP 400 body, quoting the input with control and non-ASCII characters
    /// escaped and at most 100 characters of it shown.
    public static func parse(_ text: String) -> Result<ProbeAddress, ProbeAddressError> {
        func failure(_ problem: String) -> Result<ProbeAddress, ProbeAddressError> {
            .failure(ProbeAddressError(message: "invalid target \(quoted(text)): \(problem)"))
        }
        if text.isEmpty { return failure("must not be empty (give host or host:port)") }
        if text.contains("://") { return failure("give host or host:port, not a URL") }
        if text.unicodeScalars.contains(where: {
            $0.properties.isWhitespace || $0.properties.generalCategory == .control
        }) {
            return failure("must not contain spaces or control characters")
        }
        for character in "='\\,/@?#" where text.contains(character) {
            let why = character == "," ? " (one host per probe)" : ""
            return failure("must not contain \(quoted(String(character)))\(why)")
        }

        let hostText: Substring
        let portText: Substring?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return failure("missing \"]\" after the IPv6 address") }
            hostText = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if rest.isEmpty {
                portText = nil
            } else if rest.hasPrefix(":") {
                portText = rest.dropFirst()
            } else {
                return failure("expected \":port\" after \"]\"")
            }
            if hostText.contains("%") { return failure("IPv6 zone ids (%...) are not supported") }
            guard let address = IPAddress(hostText), address.isIPv6 else {
                return failure("\(quoted(String(hostText))) is not a valid IPv6 address (only IPv6 goes in brackets)")
            }
        } else {
            let parts = text.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count <= 2 else { return failure("write an IPv6 address in brackets, as [::1] or [::1]:5432") }
            hostText = parts[0]
            portText = parts.count == 2 ? parts[1] : nil
            if let problem = hostNameProblem(hostText) { return failure(problem) }
        }

        var port = defaultPort
        if let portText {
            guard !portText.isEmpty else { return failure("missing port after \":\"") }
            guard portText.count <= 5, portText.allSatisfy({ ("0"..."9").contains($0) }), let number = Int(portText),
                (1...65535).contains(number)
            else { return failure("the port must be a number from 1 to 65535") }
            port = number
        }
        return .success(ProbeAddress(host: hostText.lowercased(), port: port))
    }

    /// Why `host` is not a host name or IPv4 literal a probe may name, or `nil`.
    ///
    /// Also checks the allow rules written without wildcards, so a rule that could never match is an error.
    static func hostNameProblem(_ host: Substring) -> String? {
        if host.isEmpty { return "missing host" }
        if host.hasPrefix("-") { return "a host must not start with \"-\"" }
        if host.utf8.count > 253 { return "a host name must be at most 253 characters (got \(host.utf8.count))" }
        guard host.unicodeScalars.allSatisfy(isHostNameScalar) else {
            return "a host name may only contain letters, digits, \".\", \"-\" and \"_\""
        }
        // One trailing dot is a fully qualified name; any other empty label is a typo libpq would not resolve.
        let labels = (host.hasSuffix(".") ? host.dropLast() : host).split(
            separator: ".", omittingEmptySubsequences: false)
        if labels.contains(where: \.isEmpty) {
            return "a host name must not have an empty label (\"..\" or a leading \".\")"
        }
        if labels.contains(where: { $0.utf8.count > 63 }) {
            return "each label of a host name (between dots) must be at most 63 characters"
        }
        // `getaddrinfo` hands a name whose last label is a number to `inet_aton`, which reads `127.1`, `2130706433`,
        // `0x7f.0.0.1` and `010.0.0.1` (octal) as addresses: only the plain dotted quad is taken as one.
        if let last = labels.last, isNumericLabel(last), IPAddress(ipv4: host) == nil {
            return "looks like an IPv4 address but is not four numbers from 0 to 255 without leading zeros"
        }
        return nil
    }

    /// Letters, digits, `.`, `-` and `_` (ASCII).
    static func isHostNameScalar(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar {
        case "a"..."z", "A"..."Z", "0"..."9", ".", "-", "_": true
        default: false
        }
    }

    /// Decimal digits, or `0x` and hex digits: a label `inet_aton` would read as a number.
    private static func isNumericLabel(_ label: Substring) -> Bool {
        if label.allSatisfy({ ("0"..."9").contains($0) }) { return true }
        guard label.hasPrefix("0x") || label.hasPrefix("0X") else { return false }
        return label.dropFirst(2).allSatisfy(\.isHexDigit)
    }

    /// `text` in double quotes for an error message: `"` and `\` escaped, anything outside printable ASCII as
    /// `\u{…}`, cut after 100 characters, so a hostile parameter cannot break the line or flood the answer.
    static func quoted(_ text: String) -> String {
        var result = "\""
        for (count, scalar) in text.unicodeScalars.enumerated() {
            if count == 100 {
                result += "..."
                break
            }
            switch scalar {
            case "\"", "\\": result += "\\\(scalar)"
            case " "..."~": result.unicodeScalars.append(scalar)
            default: result += "\\u{\(String(scalar.value, radix: 16))}"
            }
        }
        return result + "\""
    }
}

/// Why a probe's `target` parameter was refused: one line that quotes it, for an HTTP 400 body.
public struct ProbeAddressError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(message: String) {
        self.message = message
    }

    public var description: String { message }
}
