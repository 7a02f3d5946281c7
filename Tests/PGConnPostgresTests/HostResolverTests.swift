import PGConnCore
import Testing

@testable import PGConnPostgres

@Suite struct HostResolverTests {
    @Test(arguments: [
        ("host=db.example.com user=u", ["db.example.com"] as [String]?),
        ("host=10.0.0.1,db2,/var/run/postgresql user=u", ["10.0.0.1", "db2", "/var/run/postgresql"]),
        ("postgresql://localhost:5432/postgres", ["localhost"]),
        ("host=127.0.0.1 user=u", nil),
        ("host=::1 user=u", nil),
        ("host=/tmp user=u", nil),
        ("user=u", nil),
        ("host=db.example.com hostaddr=10.0.0.9 user=u", nil),
    ])
    func findsTheHostsThatNeedALookup(dsn: String, expected: [String]?) {
        #expect(HostResolver.hostsNeedingLookup(dsn: dsn) == expected)
    }

    @Test func numericHostsAndSocketDirectoriesNeedNoLookup() throws {
        #expect(try HostResolver.lookUp("192.0.2.7").get() == "192.0.2.7")
        #expect(try HostResolver.lookUp("/var/run/postgresql").get() == "")
        #expect(try HostResolver.lookUp("").get() == "")
    }

    @Test func localhostResolvesToLoopbackAddressesOnly() throws {
        let addresses = try HostResolver.lookUp("localhost").get().split(separator: ",")
        #expect(!addresses.isEmpty)
        #expect(addresses.allSatisfy { $0 == "127.0.0.1" || $0 == "::1" }, "\(addresses)")
        #expect(Set(addresses).count == addresses.count, "no address twice")
    }

    /// A name with several addresses is tried at each, as libpq would: the name repeated in `host` (TLS still
    /// verifies it), a per-host port list repeated with it; hosts with one address keep the DSN's lists.
    @Test func aNameWithSeveralAddressesIsExpandedForLibpq() throws {
        let lookUp: (String) -> Result<String, Failure> = { name in
            switch name {
            case "multi": .success("10.0.0.1,10.0.0.2,10.0.0.1")
            case "single": .success("10.0.0.9")
            default: .failure(Failure(reason: .dns, message: "no \(name)"))
            }
        }
        let one = try HostResolver.resolve(["single", "192.0.2.1"], ports: "5432,6432", with: lookUp).get()
        #expect(one == ResolvedHosts(hostaddr: "10.0.0.9,192.0.2.1"))
        let many = try HostResolver.resolve(["multi", "single", "/tmp"], ports: "5432,6432,7432", with: lookUp).get()
        #expect(many.hostaddr == "10.0.0.1,10.0.0.2,10.0.0.9,")
        #expect(many.host == "multi,multi,single,/tmp")
        #expect(many.port == "5432,5432,6432,7432")
        #expect(many.singleHostAddress == nil)
        let samePort = try HostResolver.resolve(["multi"], ports: "5432", with: lookUp).get()
        #expect(samePort == ResolvedHosts(hostaddr: "10.0.0.1,10.0.0.2", host: "multi,multi", port: nil))
        #expect(samePort.singleHostAddress == "10.0.0.1", "the port check goes to the first address")
        guard case .failure(let failure) = HostResolver.resolve(["single", "nope"], with: lookUp) else {
            Issue.record("an unknown name resolved")
            return
        }
        #expect(failure.reason == .dns)
    }

    @Test func anUnknownNameIsAFailureWithReasonDNS() {
        guard case .failure(let failure) = HostResolver.lookUp("no-such-host.invalid") else {
            Issue.record("no-such-host.invalid resolved")
            return
        }
        #expect(failure.reason == .dns)
        #expect(failure.message.hasPrefix(#"could not translate host name "no-such-host.invalid" to address: "#))
    }
}
