import Testing

@testable import PGConnCore

@Suite("IPAddress and IPNetwork")
struct IPAddressTests {
    static let ipv4: [(String, [UInt8])] = [
        ("0.0.0.0", [0, 0, 0, 0]),
        ("10.0.0.1", [10, 0, 0, 1]),
        ("192.168.100.7", [192, 168, 100, 7]),
        ("255.255.255.255", [255, 255, 255, 255]),
    ]

    @Test("parses IPv4 dotted quads", arguments: ipv4)
    func parsesIPv4(text: String, bytes: [UInt8]) throws {
        let address = try #require(IPAddress(text))
        #expect(address.bytes == bytes)
        #expect(!address.isIPv6)
        #expect(address.description == text)
        #expect(IPAddress(ipv4: text) == address)
    }

    static let invalidIPv4 = [
        "", "1.2.3", "1.2.3.4.5", "256.0.0.1", "1.2.3.256", "01.2.3.4", "1.2.3.00", "1..2.3", ".1.2.3", "1.2.3.4.",
        "a.b.c.d", " 1.2.3.4", "1.2.3.4 ", "1.2.3.-4", "1.2.3.+4", "1234.1.1.1", "0x7f.0.0.1", "127.1", "2130706433",
        "１.2.3.4",
    ]

    @Test("rejects anything but four numbers 0-255 without leading zeros", arguments: invalidIPv4)
    func rejectsIPv4(text: String) {
        #expect(IPAddress(text) == nil)
        #expect(IPAddress(ipv4: text) == nil)
    }

    /// Text, the 16 bytes as eight groups, and the RFC 5952 form.
    static let ipv6: [(String, [UInt16], String)] = [
        ("::", [0, 0, 0, 0, 0, 0, 0, 0], "::"),
        ("::1", [0, 0, 0, 0, 0, 0, 0, 1], "::1"),
        ("1::", [1, 0, 0, 0, 0, 0, 0, 0], "1::"),
        ("2001:db8::1", [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], "2001:db8::1"),
        ("2001:DB8:0:0:0:0:0:1", [0x2001, 0xdb8, 0, 0, 0, 0, 0, 1], "2001:db8::1"),
        ("1:2:3:4:5:6:7:8", [1, 2, 3, 4, 5, 6, 7, 8], "1:2:3:4:5:6:7:8"),
        (
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", Array(repeating: 0xffff, count: 8),
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
        ),
        // `::` standing for a single zero group, at either end.
        ("1:2:3:4:5:6:7::", [1, 2, 3, 4, 5, 6, 7, 0], "1:2:3:4:5:6:7:0"),
        ("::2:3:4:5:6:7:8", [0, 2, 3, 4, 5, 6, 7, 8], "0:2:3:4:5:6:7:8"),
        ("0001:02:003::", [1, 2, 3, 0, 0, 0, 0, 0], "1:2:3::"),
        // Embedded IPv4.
        ("::ffff:10.0.0.1", [0, 0, 0, 0, 0, 0xffff, 0x0a00, 1], "::ffff:a00:1"),
        ("::10.0.0.1", [0, 0, 0, 0, 0, 0, 0x0a00, 1], "::a00:1"),
        ("1:2:3:4:5:6:192.168.0.1", [1, 2, 3, 4, 5, 6, 0xc0a8, 1], "1:2:3:4:5:6:c0a8:1"),
        // RFC 5952: the longest run is compressed, the first of equal runs, never a single zero group.
        ("1:0:0:2:0:0:0:3", [1, 0, 0, 2, 0, 0, 0, 3], "1:0:0:2::3"),
        ("1:0:0:2:0:0:3:4", [1, 0, 0, 2, 0, 0, 3, 4], "1::2:0:0:3:4"),
        ("1:0:2:3:4:5:6:7", [1, 0, 2, 3, 4, 5, 6, 7], "1:0:2:3:4:5:6:7"),
    ]

    @Test("parses IPv6 with :: compression and an IPv4 tail", arguments: ipv6)
    func parsesIPv6(text: String, groups: [UInt16], canonical: String) throws {
        let address = try #require(IPAddress(text))
        #expect(address.isIPv6)
        #expect(address.bytes == groups.flatMap { [UInt8($0 >> 8), UInt8($0 & 0xff)] })
        #expect(address.description == canonical)
        #expect(IPAddress(canonical) == address)
        #expect(IPAddress(ipv4: text) == nil)
    }

    static let invalidIPv6 = [
        ":", ":::", "1:::2", "1::2::3", "::1::", "12345::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7", ":1:2:3:4:5:6:7:8",
        "1:2:3:4:5:6:7:8:", ":1::", "1::2:", "::g", "g::", "1.2.3.4::", "::1.2.3", "::1.2.3.4:5", "::01.2.3.4",
        "1:2:3:4:5:6:7:1.2.3.4", "1:2:3:4:5:6:7::1.2.3.4", "fe80::1%eth0", "[::1]", " ::1", "::1 ", "1:2:3:4:5:6:7:8::",
    ]

    @Test("rejects malformed IPv6", arguments: invalidIPv6)
    func rejectsIPv6(text: String) {
        #expect(IPAddress(text) == nil)
    }

    @Test func mappedIPv4() throws {
        #expect(try #require(IPAddress("::ffff:10.1.2.3")).mappedIPv4 == IPAddress("10.1.2.3"))
        #expect(try #require(IPAddress("::ffff:a01:203")).mappedIPv4 == IPAddress("10.1.2.3"))
        #expect(try #require(IPAddress("::10.1.2.3")).mappedIPv4 == nil)
        #expect(try #require(IPAddress("1::ffff:10.1.2.3")).mappedIPv4 == nil)
        #expect(try #require(IPAddress("10.1.2.3")).mappedIPv4 == nil)
    }

    static let networks: [(String, String)] = [
        ("10.0.0.0/8", "10.0.0.0/8"),
        ("0.0.0.0/0", "0.0.0.0/0"),
        ("127.0.0.1", "127.0.0.1/32"),
        ("192.168.1.7/32", "192.168.1.7/32"),
        ("192.168.1.128/25", "192.168.1.128/25"),
        ("::/0", "::/0"),
        ("::1", "::1/128"),
        ("2001:DB8::/32", "2001:db8::/32"),
        ("fe80::/10", "fe80::/10"),
        ("10.0.0.0/008", "10.0.0.0/8"),
    ]

    @Test("parses networks and single addresses", arguments: networks)
    func parsesNetwork(text: String, description: String) throws {
        #expect(try IPNetwork.parse(text).get().description == description)
    }

    static let invalidNetworks: [(String, String)] = [
        ("10.0.0.0/33", "the prefix length must be a number from 0 to 32 for IPv4"),
        ("10.0.0.0/-1", "the prefix length must be a number from 0 to 32 for IPv4"),
        ("10.0.0.0/", "the prefix length must be a number from 0 to 32 for IPv4"),
        ("10.0.0.0/8/8", "the prefix length must be a number from 0 to 32 for IPv4"),
        ("10.0.0.0/0008", "the prefix length must be a number from 0 to 32 for IPv4"),
        ("10.0.0.0/ 8", "the prefix length must be a number from 0 to 32 for IPv4"),
        ("::/129", "the prefix length must be a number from 0 to 128 for IPv6"),
        ("10.1.0.0/8", "has bits set after the /8 prefix (the network is 10.0.0.0/8)"),
        ("10.0.0.1/31", "has bits set after the /31 prefix (the network is 10.0.0.0/31)"),
        ("2001:db8::1/32", "has bits set after the /32 prefix (the network is 2001:db8::/32)"),
        ("::1/0", "has bits set after the /0 prefix (the network is ::/0)"),
        ("10.0.0.256/8", "not a valid IPv4 address"),
        ("/8", "not a valid IPv4 address"),
        ("db1/8", "not a valid IPv4 address"),
        ("2001:db8::g/32", "not a valid IPv6 address"),
        ("[::1]/128", "write an IPv6 address without brackets"),
    ]

    @Test("rejects bad networks with the reason", arguments: invalidNetworks)
    func rejectsNetwork(text: String, problem: String) {
        #expect(IPNetwork.parse(text) == .failure(AllowRuleError(problem)))
    }

    static let containment: [(network: String, address: String, contained: Bool)] = [
        ("10.0.0.0/8", "10.0.0.0", true),
        ("10.0.0.0/8", "10.255.255.255", true),
        ("10.0.0.0/8", "9.255.255.255", false),
        ("10.0.0.0/8", "11.0.0.0", false),
        ("0.0.0.0/0", "0.0.0.0", true),
        ("0.0.0.0/0", "255.255.255.255", true),
        ("0.0.0.0/0", "::1", false),
        ("192.168.1.7/32", "192.168.1.7", true),
        ("192.168.1.7/32", "192.168.1.6", false),
        ("192.168.1.7/32", "192.168.1.8", false),
        ("192.168.1.128/25", "192.168.1.128", true),
        ("192.168.1.128/25", "192.168.1.255", true),
        ("192.168.1.128/25", "192.168.1.127", false),
        ("172.16.0.0/12", "172.31.255.255", true),
        ("172.16.0.0/12", "172.32.0.0", false),
        ("::/0", "::", true),
        ("::/0", "2001:db8::1", true),
        ("::/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", true),
        ("::/0", "10.0.0.1", false),
        ("::1/128", "::1", true),
        ("::1/128", "0:0:0:0:0:0:0:1", true),
        ("::1/128", "::2", false),
        ("::1/128", "::", false),
        ("2001:db8::/32", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", true),
        ("2001:db8::/32", "2001:db9::", false),
        ("2001:db8::/32", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", false),
        ("fe80::/10", "febf:ffff::1", true),
        ("fe80::/10", "fec0::1", false),
        ("2001:db8::/127", "2001:db8::1", true),
        ("2001:db8::/127", "2001:db8::2", false),
        // An IPv4-mapped IPv6 address is the IPv4 host it reaches: IPv4 networks only.
        ("10.0.0.0/8", "::ffff:10.1.2.3", true),
        ("10.0.0.0/8", "::ffff:11.1.2.3", false),
        ("::/0", "::ffff:10.1.2.3", false),
        ("::ffff:0:0/96", "::ffff:10.1.2.3", false),
        ("0.0.0.0/0", "::10.1.2.3", false),
    ]

    @Test("contains: prefix boundaries, /0, /32, /128, families apart", arguments: containment)
    func contains(network: String, address: String, contained: Bool) throws {
        let parsed = try IPNetwork.parse(network).get()
        #expect(parsed.contains(try #require(IPAddress(address))) == contained)
    }
}
