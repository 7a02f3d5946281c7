import Foundation
import Testing

/// 200 failing targets once wrote about 17k lines in 100 s. At info level a target that fails the same way
/// again and again logs its first failure, then a summary every five minutes, and its recovery.
@Suite struct LogVolumeTests {
    @Test func aRepeatedFailureIsLoggedOnceAtInfoLevel() throws {
        let directory = try TemporaryDirectory()
        let closedPort = TestPostgres.freePort()
        let targets = (0..<10).map { "  - name: refused\($0)\n    dsn: host=127.0.0.1 port=\(closedPort) user=postgres" }
        let config = try directory.write(
            "config.yml",
            """
            defaults:
              login_interval: 0s
              backoff: {initial: 10ms, max: 20ms, jitter: 0}
            targets:
            \(targets.joined(separator: "\n"))
            """)
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)"], directory: directory)
        defer { exporter.kill() }
        let attempts = #"pgconn_connection_attempts_total{target="refused9"}"#
        try eventually(timeout: .seconds(20)) {
            (ExporterProcessTests.value(try httpGet(port: port, path: "/metrics").body, attempts) ?? 0) >= 50
        }
        exporter.terminate()
        _ = try exporter.waitForExit(timeout: .seconds(5))
        let lines = exporter.stderr().split(separator: "\n")
        for index in 0..<10 {
            let mine = lines.filter { $0.contains("target=refused\(index) ") }
            #expect(mine.count == 2, "start -> connecting, then the first failure: \(mine)")
        }
        print("10 targets failing for \(lines.count) log lines in all, at least 50 attempts each")
    }
}
