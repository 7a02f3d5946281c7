import Foundation
import Glibc
import PGConnCore
import Testing

@testable import PGConnPostgres

@Suite struct EndpointTests {
    @Test(arguments: [
        ("host=127.0.0.1 port=6432", nil, Endpoint.tcp(address: "127.0.0.1", port: 6432) as Endpoint?),
        ("host=::1", nil, .tcp(address: "::1", port: 5432)),
        ("host=/tmp/pg port=5433", nil, .unix(path: "/tmp/pg/.s.PGSQL.5433")),
        ("host=db.example.com port=5432", "10.0.0.7", .tcp(address: "10.0.0.7", port: 5432)),
        ("host=db.example.com hostaddr=10.0.0.9", nil, .tcp(address: "10.0.0.9", port: 5432)),
        ("host=db.example.com", nil, nil),
        ("host=10.0.0.1,10.0.0.2", "10.0.0.1,10.0.0.2", nil),
        ("host=10.0.0.1 port=5432,5433", nil, nil),
        ("host=@abstract", nil, nil),
        ("user=u", nil, nil),
    ])
    func isTheOneServerLibpqConnectsTo(dsn: String, hostaddr: String?, expected: Endpoint?) {
        #expect(Endpoint.of(values: DSNParser.values(of: dsn) ?? [:], hostaddr: hostaddr) == expected)
    }

    @Test func describesItselfAsAnAddress() {
        #expect("\(Endpoint.tcp(address: "10.0.0.1", port: 6432))" == "10.0.0.1:6432")
        #expect("\(Endpoint.tcp(address: "::1", port: 5432))" == "[::1]:5432")
        #expect("\(Endpoint.unix(path: "/run/pg/.s.PGSQL.5432"))" == "/run/pg/.s.PGSQL.5432")
    }

    @Test func aListeningTCPPortAcceptsAndAClosedOneDoesNot() throws {
        let (fd, port) = try Self.listen(family: AF_INET, address: "127.0.0.1")
        #expect(Endpoint.accepts(.tcp(address: "127.0.0.1", port: port), timeout: .seconds(1)))
        Glibc.close(fd)
        #expect(!Endpoint.accepts(.tcp(address: "127.0.0.1", port: port), timeout: .seconds(1)))
    }

    @Test func aListeningIPv6PortAccepts() throws {
        guard let (fd, port) = try? Self.listen(family: AF_INET6, address: "::1") else { return }  // no IPv6 here
        defer { Glibc.close(fd) }
        #expect(Endpoint.accepts(.tcp(address: "::1", port: port), timeout: .seconds(1)))
    }

    @Test func aListeningSocketFileAcceptsAndAMissingOneDoesNot() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("pgconn-endpoint-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent(".s.PGSQL.5432").path
        #expect(!Endpoint.accepts(.unix(path: path), timeout: .seconds(1)))

        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        defer { Glibc.close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(bound == 0)
        #expect(Glibc.listen(fd, 1) == 0)
        #expect(Endpoint.accepts(.unix(path: path), timeout: .seconds(1)))
    }

    @Test func aBadAddressDoesNotAccept() {
        #expect(!Endpoint.accepts(.tcp(address: "not-an-address", port: 5432), timeout: .seconds(1)))
        #expect(!Endpoint.accepts(.unix(path: "/" + String(repeating: "x", count: 200)), timeout: .seconds(1)))
    }

    struct SocketError: Error { var call: String }

    /// A listening socket on an ephemeral port of `address`.
    static func listen(family: Int32, address: String) throws -> (Int32, UInt16) {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw SocketError(call: "socket") }
        var storage = sockaddr_storage()
        var length: socklen_t
        if family == AF_INET {
            var v4 = sockaddr_in()
            v4.sin_family = sa_family_t(AF_INET)
            inet_pton(AF_INET, address, &v4.sin_addr)
            withUnsafeBytes(of: v4) { bytes in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: bytes) } }
            length = socklen_t(MemoryLayout<sockaddr_in>.size)
        } else {
            var v6 = sockaddr_in6()
            v6.sin6_family = sa_family_t(AF_INET6)
            inet_pton(AF_INET6, address, &v6.sin6_addr)
            withUnsafeBytes(of: v6) { bytes in withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: bytes) } }
            length = socklen_t(MemoryLayout<sockaddr_in6>.size)
        }
        let bound = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0, Glibc.listen(fd, 4) == 0 else {
            Glibc.close(fd)
            throw SocketError(call: "bind/listen")
        }
        _ = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        let port: UInt16 =
            family == AF_INET
            ? withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in.self).sin_port.bigEndian }
            : withUnsafeBytes(of: storage) { $0.load(as: sockaddr_in6.self).sin6_port.bigEndian }
        return (fd, port)
    }
}

@Suite struct ReachabilityWatchTests {
    let pgbouncer = Endpoint.tcp(address: "10.0.0.1", port: 6432)
    let other = Endpoint.tcp(address: "10.0.0.2", port: 5432)

    @Test func oneCheckPerEndpointAtATimeWhateverTheWaiters() {
        var watch = ReachabilityWatch()
        for id in 0..<1000 { watch.add(id, waitingFor: pgbouncer) }
        watch.add(1000, waitingFor: other)
        #expect(Set(watch.startChecks { _, _ in true }) == [pgbouncer, other])
        #expect(watch.startChecks { _, _ in true } == [], "both still being checked")
        #expect(watch.finished(other, accepts: false) == [])
        #expect(watch.startChecks { _, _ in true } == [other], "checked again once answered")
        #expect(watch.finished(pgbouncer, accepts: true) == Set(0..<1000))
        #expect(watch.watches[pgbouncer] == nil, "an accepting port is watched no more")
    }

    @Test func waitersThatStoppedWaitingAreDroppedAndAnEmptyWatchEnds() {
        var watch = ReachabilityWatch()
        watch.add(1, waitingFor: pgbouncer)
        watch.add(2, waitingFor: pgbouncer)
        #expect(watch.startChecks { id, _ in id == 1 } == [pgbouncer])
        #expect(watch.finished(pgbouncer, accepts: false) == [])
        #expect(watch.startChecks { _, _ in false } == [])
        #expect(watch.isEmpty)
        #expect(watch.finished(pgbouncer, accepts: true) == [], "a late answer for a dropped watch wakes nobody")
    }
}
