/// An IPv4 or IPv6 address, parsed from its text by hand (the core imports no C, so no `inet_pton`).
///
/// Only the strict forms are accepted: IPv4 as four decimal numbers 0-255 without leading zeros (`010` would be
/// octal to `inet_aton`, so it is refused rather than guessed), IPv6 as RFC 4291 text with at most one `::` and
/// an optional dotted IPv4 tail. Zone ids (`%eth0`) are not addresses here.
struct IPAddress: Hashable, Sendable, CustomStringConvertible {
    /// Network byte order: 4 bytes for IPv4, 16 for IPv6.
    let bytes: [UInt8]

    var isIPv6: Bool { bytes.count == 16 }

    /// An IPv4 or IPv6 literal without brackets; `nil` for anything else (a host name).
    init?(_ text: some StringProtocol) {
        let utf8 = Array(text.utf8)
        guard let bytes = utf8.contains(UInt8(ascii: ":")) ? Self.ipv6(utf8[...]) : Self.ipv4(utf8[...]) else {
            return nil
        }
        self.bytes = bytes
    }

    /// An IPv4 dotted quad only.
    init?(ipv4 text: some StringProtocol) {
        guard let bytes = Self.ipv4(Array(text.utf8)[...]) else { return nil }
        self.bytes = bytes
    }

    init(bytes: [UInt8]) {
        precondition(bytes.count == 4 || bytes.count == 16, "an IP address has 4 or 16 bytes")
        self.bytes = bytes
    }

    /// The IPv4 address that an IPv4-mapped IPv6 address (`::ffff:10.0.0.1`) stands for: a dual-stack socket
    /// connecting to it reaches that IPv4 host.
    var mappedIPv4: IPAddress? {
        guard isIPv6, bytes[0..<10].allSatisfy({ $0 == 0 }), bytes[10] == 0xff, bytes[11] == 0xff else { return nil }
        return IPAddress(bytes: Array(bytes[12...]))
    }

    /// Dotted quad, or RFC 5952 IPv6 text (lowercase, the longest run of two or more zero groups as `::`).
    var description: String {
        guard isIPv6 else { return bytes.map(String.init).joined(separator: ".") }
        let groups = (0..<8).map { UInt16(bytes[2 * $0]) << 8 | UInt16(bytes[2 * $0 + 1]) }
        var best: Range<Int>?
        var start: Int?
        for index in 0...8 {
            if index < 8, groups[index] == 0 {
                if start == nil { start = index }
            } else if let run = start {
                if index - run >= 2, index - run > (best?.count ?? 0) { best = run..<index }
                start = nil
            }
        }
        let hex = { (range: Range<Int>) in groups[range].map { String($0, radix: 16) }.joined(separator: ":") }
        guard let best else { return hex(0..<8) }
        return hex(0..<best.lowerBound) + "::" + hex(best.upperBound..<8)
    }

    // MARK: - Parsing

    /// Four decimal numbers 0-255 separated by dots, each `0` or without a leading zero.
    private static func ipv4(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        let parts = text.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 4 else { return nil }
        var bytes: [UInt8] = []
        for part in parts {
            guard (1...3).contains(part.count), part.allSatisfy(isDigit),
                part.count == 1 || part.first != UInt8(ascii: "0")
            else { return nil }
            let value = part.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
            guard value <= 255 else { return nil }
            bytes.append(UInt8(value))
        }
        return bytes
    }

    /// Eight groups of 1-4 hex digits, or fewer around one `::`; the last 32 bits may be written as IPv4.
    private static func ipv6(_ text: ArraySlice<UInt8>) -> [UInt8]? {
        let colon = UInt8(ascii: ":")
        var compression: Int?
        var index = text.startIndex
        while index < text.endIndex - 1 {
            if text[index] == colon, text[index + 1] == colon {
                guard compression == nil else { return nil }
                compression = index
            }
            index += 1
        }
        guard let compression else {
            guard let groups = groups(text, ipv4Tail: true), groups.count == 8 else { return nil }
            return bytes(groups)
        }
        guard let head = groups(text[..<compression], ipv4Tail: false),
            let tail = groups(text[(compression + 2)...], ipv4Tail: true),
            head.count + tail.count <= 7
        else { return nil }
        return bytes(head + Array(repeating: 0, count: 8 - head.count - tail.count) + tail)
    }

    /// The 16-bit groups of a colon-separated run (empty text: none); a dotted last part counts as two groups.
    private static func groups(_ text: ArraySlice<UInt8>, ipv4Tail: Bool) -> [UInt16]? {
        guard !text.isEmpty else { return [] }
        let parts = text.split(separator: UInt8(ascii: ":"), omittingEmptySubsequences: false)
        var groups: [UInt16] = []
        for (position, part) in parts.enumerated() {
            if ipv4Tail, position == parts.count - 1, part.contains(UInt8(ascii: ".")) {
                guard let quad = ipv4(part) else { return nil }
                groups += [UInt16(quad[0]) << 8 | UInt16(quad[1]), UInt16(quad[2]) << 8 | UInt16(quad[3])]
                continue
            }
            guard (1...4).contains(part.count) else { return nil }
            var value: UInt16 = 0
            for byte in part {
                guard let digit = hexValue(byte) else { return nil }
                value = value << 4 | UInt16(digit)
            }
            groups.append(value)
        }
        return groups
    }

    private static func bytes(_ groups: [UInt16]) -> [UInt8] {
        groups.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] }
    }

    private static func isDigit(_ byte: UInt8) -> Bool { (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }

    private static func hexValue(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// An IPv4 or IPv6 network of an allow rule: `10.0.0.0/8`, `fd00::/8`, or one address (`127.0.0.1` = `/32`).
public struct IPNetwork: Sendable, Equatable, CustomStringConvertible {
    /// The network address: no bits set after the prefix.
    let address: IPAddress
    /// 0...32 for IPv4, 0...128 for IPv6.
    public let prefixLength: Int

    public var isIPv6: Bool { address.isIPv6 }

    /// `10.0.0.0/8`; a single address keeps its prefix too (`127.0.0.1/32`).
    public var description: String { "\(address)/\(prefixLength)" }

    init(address: IPAddress, prefixLength: Int) {
        precondition((0...address.bytes.count * 8).contains(prefixLength), "prefix length out of range")
        self.address = address
        self.prefixLength = prefixLength
    }

    /// Parses `address/prefix` or a single address; the problem is a phrase for a config error.
    ///
    /// Bits set after the prefix (`10.1.0.0/8`) are an error, not silently cleared: they usually mean a
    /// mistyped prefix, and the network actually allowed would be larger than the one the reader sees.
    static func parse(_ text: String) -> Result<IPNetwork, AllowRuleError> {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        let addressText = parts[0]
        guard let address = IPAddress(addressText) else {
            if addressText.hasPrefix("[") {
                return .failure(AllowRuleError("write an IPv6 address without brackets"))
            }
            return .failure(AllowRuleError("not a valid \(addressText.contains(":") ? "IPv6" : "IPv4") address"))
        }
        let maximum = address.bytes.count * 8
        guard parts.count == 2 else { return .success(IPNetwork(address: address, prefixLength: maximum)) }
        let prefixText = parts[1]
        guard (1...3).contains(prefixText.count), prefixText.allSatisfy({ ("0"..."9").contains($0) }),
            let prefix = Int(prefixText), prefix <= maximum
        else {
            let family = address.isIPv6 ? "IPv6" : "IPv4"
            return .failure(AllowRuleError("the prefix length must be a number from 0 to \(maximum) for \(family)"))
        }
        let network = IPNetwork(address: address.masked(to: prefix), prefixLength: prefix)
        guard network.address == address else {
            return .failure(AllowRuleError("has bits set after the /\(prefix) prefix (the network is \(network))"))
        }
        return .success(network)
    }

    /// Whether `candidate` lies in this network. An IPv4-mapped IPv6 address counts as the IPv4 address it
    /// maps to: it matches IPv4 networks and no IPv6 network (`::/0` does not let a probe reach IPv4 hosts).
    func contains(_ candidate: IPAddress) -> Bool {
        let candidate = candidate.mappedIPv4 ?? candidate
        guard candidate.bytes.count == address.bytes.count else { return false }
        return candidate.masked(to: prefixLength) == address
    }
}

extension IPAddress {
    /// This address with every bit after the first `prefixLength` cleared.
    fileprivate func masked(to prefixLength: Int) -> IPAddress {
        var bytes = self.bytes
        for index in bytes.indices {
            let kept = min(max(prefixLength - index * 8, 0), 8)
            bytes[index] &= kept == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - kept))
        }
        return IPAddress(bytes: bytes)
    }
}
