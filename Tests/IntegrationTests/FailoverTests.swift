import Foundation
import Testing

/// A primary and a hot standby made with `pg_basebackup -R`, and targets that list both hosts with
/// `target_session_attrs=read-write`, as an application's connection string would: a restart of the primary is
/// an outage on the same server, not a failover; the primary stopped and the standby promoted is one failover,
/// measured, with an event and a log line naming both servers.
@Suite(.serialized) struct FailoverTests {
    /// A primary and a streaming hot standby of it.
    static func primaryAndStandby() throws -> (TestPostgres, TestPostgres) {
        let primary = try TestPostgres.start(settings: ["wal_level": "replica"])
        do {
            let standby = try TestPostgres.startStandby(of: primary)
            #expect(try standby.psql("SELECT pg_is_in_recovery()") == "t")
            return (primary, standby)
        } catch {
            primary.cleanup()
            throw error
        }
    }

    @Test func aPromotedStandbyIsAFailoverAndARestartIsAnOutage() throws {
        let (primary, standby) = try Self.primaryAndStandby()
        defer {
            standby.cleanup()
            primary.cleanup()
        }

        let password = TestPostgres.superuserPassword
        let both =
            "host=127.0.0.1,127.0.0.1 port=\(primary.port),\(standby.port) user=postgres password=\(password) "
            + "dbname=postgres sslmode=disable target_session_attrs=read-write"
        let directory = try TemporaryDirectory()
        let (exporter, port) = try ExporterProcess.start(
            config:
                """
                defaults:
                  probe_interval: 200ms
                  probe_timeout: 150ms
                  connect_timeout: 2s
                  login_interval: 0s
                targets:
                  - name: app
                    dsn: \(both)
                    expect: primary
                  - name: app_tuned
                    dsn: \(both)
                    expect: primary
                    backoff: {initial: 50ms, max: 500ms, multiplier: 2, jitter: 0.1}
                  - name: replica
                    dsn: host=127.0.0.1 port=\(standby.port) user=postgres password=\(password) dbname=postgres sslmode=disable
                    expect: standby
                """, in: directory)
        defer { exporter.kill() }
        func page() throws -> String { try httpGet(port: port, path: "/metrics").body }
        func value(_ series: String, in text: String) -> Double? {
            let line = text.split(separator: "\n").first { $0.hasPrefix(series + " ") }
            return line.flatMap { Double($0.split(separator: " ").last ?? "") }
        }
        let onPrimary = { (target: String) in
            #"pgconn_session_server_info{target="\#(target)",host="127.0.0.1",port="\#(primary.port)"} 1"#
        }
        let onStandby = { (target: String) in
            #"pgconn_session_server_info{target="\#(target)",host="127.0.0.1",port="\#(standby.port)"} 1"#
        }
        try eventually(timeout: .seconds(30)) {
            let text = try page()
            return text.contains(onPrimary("app")) && text.contains(onPrimary("app_tuned"))
                && text.contains(#"pgconn_up{target="app"} 1"#) && text.contains(#"pgconn_up{target="replica"} 1"#)
        }
        let first = try page()
        #expect(value(#"pgconn_host_switches_total{target="app"}"#, in: first) == 0)
        #expect(value(#"pgconn_failovers_total{target="app"}"#, in: first) == 0)
        #expect(!first.contains(#"pgconn_failovers_total{target="replica"}"#), "one host: no failover series")

        // 1. The primary restarts: an outage of the same server, not a failover.
        try primary.stopFast()
        try eventually(timeout: .seconds(20)) { try value(#"pgconn_outages_total{target="app"}"#, in: page()) == 1 }
        try primary.start()
        try eventually(timeout: .seconds(30)) {
            let text = try page()
            return text.contains(#"pgconn_up{target="app"} 1"#) && text.contains(#"pgconn_up{target="app_tuned"} 1"#)
        }
        let restarted = try page()
        #expect(restarted.contains(onPrimary("app")))
        #expect(value(#"pgconn_failovers_total{target="app"}"#, in: restarted) == 0)
        #expect(value(#"pgconn_host_switches_total{target="app"}"#, in: restarted) == 0)

        // 2. The primary stops for good and the standby is promoted: one failover to the standby.
        try primary.stopFast()
        try standby.promote()
        try eventually(timeout: .seconds(30)) {
            let text = try page()
            return value(#"pgconn_failovers_total{target="app"}"#, in: text) == 1
                && value(#"pgconn_failovers_total{target="app_tuned"}"#, in: text) == 1
        }
        let after = try page()
        for target in ["app", "app_tuned"] {
            #expect(after.contains(onStandby(target)), "\(target) is on the promoted standby")
            #expect(value(#"pgconn_host_switches_total{target="\#(target)"}"#, in: after) == 1)
            #expect(value(#"pgconn_failover_duration_seconds_count{target="\#(target)"}"#, in: after) == 1)
            let seconds = value(#"pgconn_failover_duration_seconds_sum{target="\#(target)"}"#, in: after) ?? 0
            print("failover of \(target): \(seconds) s")
            #expect(seconds > 0 && seconds < 30)
        }
        // The standby's own target saw it promoted under its live session: a role change, and `expect:
        // standby` fails it.
        try eventually(timeout: .seconds(20)) {
            try value(#"pgconn_role_changes_total{target="replica"}"#, in: page()) == 1
        }
        #expect(value(#"pgconn_role_changes_total{target="app"}"#, in: after) == 0, "a primary before and after")

        let events = try httpGet(port: port, path: "/api/v1/events?target=app").body
        #expect(events.contains(#""kind":"failover""#), "\(events)")
        #expect(events.contains(#""from":"127.0.0.1:\#(primary.port)","to":"127.0.0.1:\#(standby.port)""#))
        let log = exporter.stderr()
        #expect(
            log.contains(
                #"msg=failover target=app from=127.0.0.1:\#(primary.port) to=127.0.0.1:\#(standby.port) duration_seconds="#
            ), "\(log)")
    }

    /// A standby whose replay is paused while the primary writes falls behind `max_replay_lag`: its probes
    /// fail with `replication_lag`, `/health/<target>` answers 503 (a load balancer stops sending reads), and
    /// both come back once replay resumes.
    @Test func aStandbyFurtherBehindThanMaxReplayLagFailsItsHealth() throws {
        let (primary, standby) = try Self.primaryAndStandby()
        defer {
            standby.cleanup()
            primary.cleanup()
        }
        let directory = try TemporaryDirectory()
        let (exporter, port) = try ExporterProcess.start(
            config:
                """
                defaults:
                  probe_interval: 200ms
                  probe_timeout: 150ms
                  login_interval: 0s
                targets:
                  - name: reads
                    dsn: \(standby.dsn(password: TestPostgres.superuserPassword)) sslmode=disable
                    expect: standby
                    max_replay_lag: 2s
                """, in: directory)
        defer { exporter.kill() }
        // The lag is the age of the last replayed transaction: replay one first (a fresh standby has none).
        try primary.psql("CREATE TABLE written_while_paused (x int)")
        try eventually(timeout: .seconds(30)) {
            try standby.psql("SELECT to_regclass('written_while_paused') IS NOT NULL") == "t"
        }
        try eventually(timeout: .seconds(30)) {
            try httpGet(port: port, path: "/health/reads").status == 200
                && httpGet(port: port, path: "/metrics").body.contains(
                    #"pgconn_server_replay_lag_seconds{target="reads"} 0"#)
        }

        try standby.psql("SELECT pg_wal_replay_pause()")
        try eventually(timeout: .seconds(30), poll: .milliseconds(200)) {
            try primary.psql("INSERT INTO written_while_paused VALUES (1)")
            return try httpGet(port: port, path: "/health/reads").status == 503
        }
        let health = try httpGet(port: port, path: "/health/reads?format=json").body
        #expect(health.contains("replication_lag"), "\(health)")
        try eventually(timeout: .seconds(5)) {
            let page = try httpGet(port: port, path: "/metrics").body
            return page.contains(#"pgconn_up{target="reads"} 0"#)
                && !page.contains(#"pgconn_probe_failures_total{target="reads",reason="replication_lag"} 0"#)
        }

        try standby.psql("SELECT pg_wal_replay_resume()")
        try eventually(timeout: .seconds(30)) { try httpGet(port: port, path: "/health/reads").status == 200 }
        // /metrics is served from ready bytes, up to a fraction of a second older than /health.
        try eventually(timeout: .seconds(5)) {
            try httpGet(port: port, path: "/metrics").body.contains(#"pgconn_up{target="reads"} 1"#)
        }
    }
}
