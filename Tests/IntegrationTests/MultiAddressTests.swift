import Foundation
import Glibc
import Testing

/// A host name with two addresses, as libpq would try them: `db.multi.test` is `::1` and `127.0.0.1` in an
/// /etc/hosts bind-mounted in the exporter's own mount namespace (`unshare -m`; root only, as in CI). The
/// resolver puts `::1` first (RFC 6724), where nothing listens; the server listens on 127.0.0.1 only. The
/// exporter resolves the name on a worker and hands libpq both addresses, the name repeated for each, so the
/// session connects at the second, as libpq itself would.
@Suite(
    .serialized,
    .enabled(
        if: getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare"),
        "needs root and unshare"))
struct MultiAddressTests {
    @Test func aNameWithSeveralAddressesIsTriedAtEach() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let directory = try TemporaryDirectory()
        let hosts = try directory.write("hosts", "::1 db.multi.test\n127.0.0.1 db.multi.test\n")
        let password = TestPostgres.superuserPassword
        let (exporter, port) = try ExporterProcess.start(
            config:
                """
                defaults:
                  probe_interval: 200ms
                  probe_timeout: 150ms
                  login_interval: 1s
                targets:
                  - name: multi
                    dsn: host=db.multi.test port=\(server.port) user=postgres password=\(password) dbname=postgres sslmode=disable
                """, in: directory,
            launcher: [
                "/usr/bin/unshare", "-m", "/bin/sh", "-c", "mount --bind \"$0\" /etc/hosts && exec \"$@\"", hosts,
            ])
        defer { exporter.kill() }
        try eventually(timeout: .seconds(20)) {
            let page = try httpGet(port: port, path: "/metrics").body
            return page.contains(#"pgconn_up{target="multi"} 1"#)
                && page.contains(#"pgconn_login_up{target="multi"} 1"#)
        }
        let page = try httpGet(port: port, path: "/metrics").body
        #expect(
            page.contains(#"pgconn_session_server_info{target="multi",host="db.multi.test",port="\#(server.port)"} 1"#))
        let trace = try httpGet(port: port, path: "/probe?target=multi&debug=true").body
        #expect(trace.contains("(::1,127.0.0.1)"), "both addresses handed to libpq, ::1 first:\n\(trace)")
        #expect(trace.contains("probe_success 1"))
    }
}
