import Foundation
import PGConnCore
import Testing

/// "What happened to db at 03:12?" without Prometheus: the event history of the real binary after a
/// terminated backend.
@Suite struct EventsEndpointTests {
    @Test func aTerminatedBackendLeavesItsStoryInTheEventHistory() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let directory = try TemporaryDirectory()
        let config = try directory.write(
            "config.yml",
            """
            defaults:
              probe_interval: 200ms
              login_interval: 0s
              backoff: {initial: 50ms, max: 200ms}
            targets:
              - name: db
                dsn: "\(server.dsn(password: TestPostgres.superuserPassword))"
            """)
        let port = TestPostgres.freePort()
        let exporter = try ExporterProcess(
            arguments: ["--config.file=\(config)", "--web.listen-address=127.0.0.1:\(port)"], directory: directory)
        defer { exporter.kill() }
        try eventually(timeout: .seconds(20)) { try httpGet(port: port, path: "/health/db").status == 200 }
        let before = Date().timeIntervalSince1970
        _ = try server.psql(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'pgconn_exporter'")
        try eventually(timeout: .seconds(20)) {
            try httpGet(port: port, path: "/api/v1/events?target=db").body.contains(#""from":"failing","to":"succeeding""#)
        }
        let all = try httpGet(port: port, path: "/api/v1/events?target=db")
        #expect(all.status == 200 && all.headers["content-type"] == "application/json")
        let story = all.body
        #expect(story.contains(#""kind":"state","from":"start","to":"connecting""#))
        #expect(story.contains(#""kind":"state","from":"up","to":"backoff","reason":"admin_shutdown","sqlstate":"57P01""#))
        #expect(story.contains(#""kind":"probe","from":"succeeding","to":"failing","reason":"admin_shutdown""#))
        #expect(story.range(of: #""kind":"probe","from":"failing","to":"succeeding","reason":null,"sqlstate":null,"message":null,"outage_seconds":0\.\d+"#, options: .regularExpression) != nil)

        let since = RFC3339.format(before)
        let recent = try httpGet(port: port, path: "/api/v1/events?since=\(since)").body
        #expect(!recent.contains(#""from":"start""#), "since \(since) leaves the start out")
        #expect(recent.contains(#""to":"backoff""#))
        #expect(try httpGet(port: port, path: "/api/v1/events?target=nope").status == 404)
        #expect(try httpGet(port: port, path: "/api/v1/events?since=yesterday").status == 400)
    }
}
