/// One entry of a module's `allow` list: which `target` parameters the module may probe.
///
/// Nothing is probed unless a rule matches, so the exporter cannot be turned into a scanner of whatever the
/// HTTP client names. A host glob trusts DNS for where the name leads; a network is checked without any lookup
/// and so matches only targets written as IP literals.
public enum ProbeAllowRule: Sendable, Equatable, CustomStringConvertible {
    /// A host glob, lowercased: `*` matches any run of characters (dots included), `?` exactly one.
    ///
    /// Matched case-insensitively against the host text as given, so `*` matches every target, IP literals
    /// included. A glob that reads as an IP range (`10.0.0.*`) is refused when the config is read: it would
    /// also match names, so IP ranges are written as networks.
    case host(String)
    /// An IPv4 or IPv6 network; a single address is a network of its full prefix.
    case network(IPNetwork)

    /// Whether `address`'s host matches this rule (ports are the module's `ports`).
    public func matches(_ address: ProbeAddress) -> Bool {
        switch self {
        case .host(let glob):
            return Self.glob(Array(glob.utf8)[...], matches: Array(address.host.lowercased().utf8)[...])
        case .network(let network):
            guard let literal = IPAddress(address.host) else { return false }
            return network.contains(literal)
        }
    }

    /// The rule as it would be written: the glob, or `10.0.0.0/8`.
    public var description: String {
        switch self {
        case .host(let glob): glob
        case .network(let network): network.description
        }
    }

    /// Reads one `allow` entry.
    ///
    /// An entry with `/` or `:` is a network or IPv6 address; digits and dots alone are an IPv4 address; anything
    /// else is a host glob. A glob without wildcards must be a valid host name, so a rule that could never
    /// match (`db..internal`, `10.0.0.256`) is reported instead of allowing nothing in silence; a glob that
    /// reads as an IP range (`10.0.0.*`) is refused because it would also allow names.
    static func parse(_ text: String) -> Result<ProbeAllowRule, AllowRuleError> {
        if text.isEmpty { return .failure(AllowRuleError("must not be empty")) }
        if text.filter({ $0 == ":" }).count == 1, !text.contains("/") {
            return .failure(AllowRuleError("an allow entry names a host without a port (list ports under ports)"))
        }
        let hasWildcard = text.contains("*") || text.contains("?")
        if text.contains("/") || text.contains(":")
            || (!hasWildcard && text.allSatisfy({ $0 == "." || ("0"..."9").contains($0) }))
        {
            return IPNetwork.parse(text).map { .network($0) }
        }
        guard hasWildcard else {
            if let problem = ProbeAddress.hostNameProblem(text[...]) { return .failure(AllowRuleError(problem)) }
            return .success(.host(text.lowercased()))
        }
        guard text.unicodeScalars.allSatisfy({ ProbeAddress.isHostNameScalar($0) || $0 == "*" || $0 == "?" }) else {
            return .failure(
                AllowRuleError("a host glob may only contain letters, digits, \".\", \"-\", \"_\", \"*\" and \"?\""))
        }
        // `10.0.0.*` also matches the name `10.0.0.evil.example`, which its owner's DNS can point anywhere.
        if text.contains(where: { ("0"..."9").contains($0) }),
            text.allSatisfy({ ("0"..."9").contains($0) || ".*?".contains($0) })
        {
            return .failure(
                AllowRuleError(
                    "an IP range as a glob also matches host names (10.0.0.* matches 10.0.0.evil.example): "
                        + "use a CIDR such as 10.0.0.0/24"))
        }
        if text.utf8.count > 253 {
            return .failure(AllowRuleError("a host glob must be at most 253 characters (got \(text.utf8.count))"))
        }
        return .success(.host(text.lowercased()))
    }

    /// Wildcard matching with one backtrack point (the last `*`): linear in practice, O(n·m) at worst.
    private static func glob(_ pattern: ArraySlice<UInt8>, matches text: ArraySlice<UInt8>) -> Bool {
        let star = UInt8(ascii: "*")
        let any = UInt8(ascii: "?")
        var p = pattern.startIndex
        var t = text.startIndex
        var lastStar: (pattern: Int, text: Int)?
        while t < text.endIndex {
            if p < pattern.endIndex, pattern[p] == star {
                lastStar = (p, t)
                p += 1
            } else if p < pattern.endIndex, pattern[p] == any || pattern[p] == text[t] {
                p += 1
                t += 1
            } else if let backtrack = lastStar {
                // Let the last `*` swallow one more character and try again from there.
                lastStar = (backtrack.pattern, backtrack.text + 1)
                p = backtrack.pattern + 1
                t = backtrack.text + 1
            } else {
                return false
            }
        }
        while p < pattern.endIndex, pattern[p] == star { p += 1 }
        return p == pattern.endIndex
    }
}

/// Why an `allow` entry is neither a network nor a host glob: a phrase for the config error at its path.
struct AllowRuleError: Error, Equatable {
    var message: String

    init(_ message: String) {
        self.message = message
    }
}
