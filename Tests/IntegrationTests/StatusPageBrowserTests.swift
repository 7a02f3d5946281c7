import Foundation
import Testing

/// The status page as a person sees it: headless Chromium (Debian's `chromium`, installed by `make test`)
/// renders it from the real binary with three targets in different states.
@Suite(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/chromium"), "needs chromium"))
struct StatusPageBrowserTests {
    @Test func chromiumRendersThreeTargetsInTheirStates() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        try server.psql("CREATE ROLE app LOGIN PASSWORD 'first'")
        let directory = try TemporaryDirectory()
        let password = try directory.write("app.password", "first\n")
        let config = try directory.write(
            "config.yml",
            """
            defaults: {probe_interval: 200ms, login_interval: 1s, backoff: {initial: 50ms, max: 200ms}}
            targets:
              - {name: primary, dsn: "\(server.dsn(password: TestPostgres.superuserPassword))"}
              - {name: app, dsn: "host=127.0.0.1 port=\(server.port) user=app dbname=postgres", password_file: \(password)}
              - {name: replica, dsn: "host=127.0.0.1 port=\(TestPostgres.freePort()) user=postgres"}
            """)
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)"], directory: directory)
        defer { exporter.kill() }
        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/health/app").status == 200 }
        try server.psql("ALTER ROLE app PASSWORD 'second'")
        try eventually(timeout: .seconds(20)) {
            try httpGet(port: port, path: "/health/app?format=json").body.contains(#""login_up":false"#)
        }

        let url = "http://127.0.0.1:\(port)/"
        let chromium = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1100,300"]
        // The DOM after the page's script ran (the filter): what the browser shows, as text.
        let dom = try runCommand("/usr/bin/chromium", chromium + ["--dump-dom", url], timeout: .seconds(90))
        #expect(dom.status == 0, "\(dom.stderr)")
        let page = dom.stdout
        #expect(page.contains("3 targets, <span class=\"down\">1 failing</span>"))
        let rows = ["replica", "app", "primary"].map { page.range(of: "<tr data-name=\"\($0)\"")?.lowerBound }
        #expect(rows.allSatisfy { $0 != nil }, "every target has a row")
        #expect(rows.compactMap { $0 } == rows.compactMap { $0 }.sorted(), "the failing target first, then by name")
        // Between backoffs the refused target is connecting for a moment (a connect step on a worker): either is down.
        #expect(page.range(of: #"<td class="down">(backoff|connecting)</td>"#, options: .regularExpression) != nil)
        #expect(page.contains(">failing auth</td>"), "app: session up, login refused")
        #expect(page.range(of: #"<td class="up">up</td><td>primary</td><td>\d+\.\dms</td>"#, options: .regularExpression) != nil)

        let png = directory.url.appendingPathComponent("status.png")
        let shot = try runCommand("/usr/bin/chromium", chromium + ["--screenshot=\(png.path)", url], timeout: .seconds(90))
        #expect(shot.status == 0, "\(shot.stderr)")
        let bytes = try Data(contentsOf: png)
        #expect(bytes.prefix(8) == Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A]), "a PNG")
        #expect(bytes.count > 10_000, "a rendered page, not a blank one: \(bytes.count) bytes")
    }
}
