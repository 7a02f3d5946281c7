import Foundation
import Glibc
import Testing

/// A DNS server that never answers, reached through the system resolver: a UDP socket bound on port 53 of a
/// loopback address that never reads, and a resolv.conf naming it, bind-mounted over /etc/resolv.conf in a
/// mount namespace of the exporter's own (`unshare -m`; root only, as in CI).
///
/// The host comes from `PGHOST`, which the DSN does not spell out: libpq used to resolve it itself inside
/// `PQconnectStartParams`, on the I/O thread, and the loop lagged 23.8 s while a healthy target never came up.
@Suite(.serialized, .enabled(if: silentDNSCanRun(), "needs root, unshare, and udp 127.0.0.153:53 free"))
struct SilentDNSTests {

    @Test func aHostFromPGHOSTBehindASilentResolverDelaysNothingElse() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let resolver = try SilentResolver(address: "127.0.0.153")
        _ = resolver
        let directory = try TemporaryDirectory()
        let resolvConf = try directory.write("resolv.conf", "nameserver 127.0.0.153\noptions timeout:3 attempts:2\n")
        let config = try directory.write(
            "config.yml",
            """
            defaults:
              probe_interval: 200ms
              probe_timeout: 150ms
              connect_timeout: 1s
              login_interval: 0s
            targets:
              - name: from_pghost
                dsn: user=postgres dbname=postgres
              - name: healthy
                dsn: "\(server.dsn(password: TestPostgres.superuserPassword))"
            """)
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)"], directory: directory,
            launcher: ["/usr/bin/unshare", "-m", "/bin/sh", "-c", "mount --bind \"$0\" /etc/resolv.conf && exec \"$@\"", resolvConf],
            environment: ["PGHOST": "db.silent.example"])
        defer { exporter.kill() }

        func value(_ series: String) throws -> Double? {
            ExporterProcessTests.value(try httpGet(port: port, path: "/metrics", timeout: .seconds(2)).body, series)
        }
        try eventually(timeout: .seconds(10)) { try value(#"pgconn_up{target="healthy"}"#) == 1 }
        try eventually(timeout: .seconds(10)) {
            try value(#"pgconn_connection_failures_total{target="from_pghost",reason="dns"}"#) ?? 0 >= 2
        }
        let probes = try #require(try value(#"pgconn_probes_total{target="healthy"}"#))
        var slowest = Duration.zero
        var mostOverdue = 0.0
        let clock = ContinuousClock()
        try eventually(timeout: .seconds(10)) {
            let start = clock.now
            let page = try httpGet(port: port, path: "/metrics", timeout: .seconds(2)).body
            slowest = max(slowest, clock.now - start)
            mostOverdue = max(mostOverdue, ExporterProcessTests.value(page, "pgconn_exporter_loop_overdue_seconds") ?? 0)
            return (ExporterProcessTests.value(page, #"pgconn_probes_total{target="healthy"}"#) ?? 0) >= probes + 10
        }
        let page = try httpGet(port: port, path: "/metrics").body
        print("silent DNS behind PGHOST: slowest scrape \(slowest), loop overdue at most \(mostOverdue) s")
        #expect(page.contains(#"pgconn_target_info{target="from_pghost",host="db.silent.example""#), "the host libpq uses")
        #expect(ExporterProcessTests.value(page, #"pgconn_connection_failures_total{target="from_pghost",reason="timeout"}"#) == 0)
        #expect((ExporterProcessTests.value(page, "pgconn_exporter_dns_lookups_pending") ?? 9) <= 1)
        #expect(mostOverdue < 0.5)
        #expect(slowest < .seconds(1))
    }
}

/// Binds UDP `address`:53 and never reads: queries sit in the socket buffer, unanswered.
final class SilentResolver {
    let fd: Int32

    init(address: String) throws {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var sin = sockaddr_in()
        sin.sin_family = sa_family_t(AF_INET)
        sin.sin_port = in_port_t(53).bigEndian
        inet_pton(AF_INET, address, &sin.sin_addr)
        let bound = withUnsafePointer(to: &sin) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard fd >= 0, bound == 0 else { throw TestPostgresError("cannot bind udp \(address):53") }
    }

    deinit { close(fd) }
}

/// Root (port 53, mount namespaces), util-linux's unshare, and nothing else on the test's DNS address.
func silentDNSCanRun() -> Bool {
    getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare")
        && (try? SilentResolver(address: "127.0.0.153")) != nil
}
