import Foundation
import PGConnCore
import Testing

/// SIGTERM while logins are in flight: SCRAM computations on the connect workers, login checks opening and
/// closing connections, scrapes.
///
/// An exit that left a connect step running crashed inside OpenSSL, whose exit handler frees what the step is
/// using, and an exit while the workers were ending made LeakSanitizer report OpenSSL's per-thread memory: 8 of
/// 40 exits of `make sanitize-exit` failed so before `Monitor.stop()` joined its threads. Here
/// every stop must end with exit status 0 and the "stopped" line; under `make sanitize` each exit is also a
/// LeakSanitizer check (docs/reliability.md, "Sanitizers").
@Suite(.serialized) struct ShutdownTests {
    @Test func sigtermWithLoginsInFlightExitsCleanlyEveryTime() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let directory = try TemporaryDirectory()
        let dsn = server.dsn(password: server.superuserPassword)
        // Three targets, each with a SCRAM login check every 30 ms: about one connect step in flight at a time.
        let targets = (0..<3).map { "  - name: db\($0)\n    dsn: \(dsn)" }.joined(separator: "\n")
        let yaml = """
            defaults:
              probe_interval: 30ms
              probe_timeout: 25ms
              login_interval: 30ms
            targets:
            \(targets)
            """
        var random = SplitMix64(seed: 20_261_204)
        var exits: [String] = []
        for run in 0..<10 {
            let (exporter, port) = try ExporterProcess.start(config: yaml, in: directory)
            defer { exporter.kill() }
            // A different moment each run: after 3 to 30 login checks in all.
            let checks = Double(3 + random.next() % 28)
            try eventually(timeout: .seconds(30), poll: .milliseconds(5)) {
                let page = try httpGet(port: port, path: "/metrics").body
                let done = (0..<3).map {
                    ExporterProcessTests.value(page, #"pgconn_login_checks_total{target="db\#($0)"}"#) ?? 0
                }
                return done.reduce(0, +) >= checks
            }
            exporter.terminate()
            let status = try exporter.waitForExit(timeout: .seconds(10))
            exits.append(exporter.termination)
            #expect(status == 0 && exporter.termination == "exit 0", "run \(run): \(exporter.termination)")
            let log = exporter.stderr()
            #expect(log.contains("msg=stopped"), "run \(run) ended without its last line:\n\(log.suffix(2_000))")
            #expect(!log.contains("Sanitizer"), "run \(run):\n\(log.suffix(4_000))")
        }
        print("SIGTERM with logins in flight, 10 runs: \(exits.joined(separator: ", "))")
    }
}
