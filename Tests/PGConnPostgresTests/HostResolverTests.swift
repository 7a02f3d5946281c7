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

    @Test func localhostResolvesToALoopbackAddress() throws {
        let address = try HostResolver.lookUp("localhost").get()
        #expect(address == "127.0.0.1" || address == "::1")
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
