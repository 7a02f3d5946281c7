import Foundation
import PGConnCore
import Testing

/// A fleet split across two replicas (docs/scaling.md), with one real Prometheus: configured targets by
/// `--config.shard`, discovered ones by `hashmod` relabeling over `/probe`. Each target is watched by exactly one
/// replica, and the dashboards' queries see both.
@Suite(.serialized) struct FleetSplitTests {
    @Test func eachTargetIsWatchedByExactlyOneReplicaAndTheDashboardsSeeBoth() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        // Six configured names, three in each shard (checked here, so the split is not left to chance).
        let names = (0..<40).map { "db\($0)" }
        let shards = (0..<2).map { ConfigShard(index: $0, count: 2)! }
        let chosen = shards.flatMap { shard in names.filter { shard.contains($0) }.prefix(3) }
        let directory = try TemporaryDirectory()
        let config = try directory.write(
            "config.yml",
            """
            defaults: {probe_interval: 500ms, login_interval: 0s}
            targets:
            \(chosen.map { "  - {name: \($0), dsn: \"\(server.dsn(password: TestPostgres.superuserPassword))\"}" }.joined(separator: "\n"))
            modules:
              local:
                user: postgres
                password_env: PGCONN_TEST_PASSWORD
                timeout: 2s
                allow: ["127.0.0.1"]
            """)
        let ports = (0..<2).map { _ in TestPostgres.freePort() }
        let replicas = try (0..<2).map { index in
            try ExporterProcess(
                arguments: [
                    "--config.file=\(config)", "--web.listen-address=127.0.0.1:\(ports[index])",
                    "--config.shard=\(index)/2",
                ],
                directory: directory, environment: ["PGCONN_TEST_PASSWORD": TestPostgres.superuserPassword])
        }
        defer { for replica in replicas { replica.kill() } }

        // Twelve discovered targets: the server and eleven closed ports (a failed probe is still a probe).
        let discovered = ["127.0.0.1:\(server.port)"] + (0..<11).map { _ in "127.0.0.1:\(TestPostgres.freePort())" }
        let fileSD = "- targets: [\(discovered.map { "\"\($0)\"" }.joined(separator: ", "))]\n"
        let probeJobs = (0..<2).map { index in
            """
              - job_name: pgconn_probe_\(index)
                metrics_path: /probe
                params: {module: [local]}
                file_sd_configs: [{files: [targets.yml], refresh_interval: 1s}]
                relabel_configs:
                  - {source_labels: [__address__], modulus: 2, target_label: __tmp_hash, action: hashmod}
                  - {source_labels: [__tmp_hash], regex: "\(index)", action: keep}
                  - {source_labels: [__address__], target_label: __param_target}
                  - {source_labels: [__param_target], target_label: instance}
                  - {target_label: __address__, replacement: "127.0.0.1:\(ports[index])"}
            """
        }
        let recording = try String(
            contentsOf: PrometheusRulesTests.rules.appendingPathComponent("recording.yml"), encoding: .utf8)
        let prometheus = try TestPrometheus.start(
            config: { _ in
                """
                global: {scrape_interval: 1s, evaluation_interval: 1s}
                rule_files: [recording.yml]
                scrape_configs:
                  - job_name: pgconn_exporter
                    static_configs: [{targets: ["127.0.0.1:\(ports[0])", "127.0.0.1:\(ports[1])"]}]
                \(probeJobs.joined(separator: "\n"))
                """
            }, files: ["recording.yml": recording, "targets.yml": fileSD])
        defer { prometheus.cleanup() }

        func series(_ expression: String) -> [(labels: [String: String], value: Double)] {
            (try? prometheus.query(expression)) ?? []
        }
        // Configured targets: each has pgconn_up on one replica only, and both replicas have their three.
        try eventually(timeout: .seconds(30)) { series("pgconn_up == 1").count == 6 }
        let perTarget = series("count by (target) (pgconn_up)")
        #expect(perTarget.count == 6 && perTarget.allSatisfy { $0.value == 1 }, "\(perTarget)")
        let perReplica = series("count by (instance) (pgconn_up)")
        #expect(perReplica.count == 2 && perReplica.allSatisfy { $0.value == 3 }, "\(perReplica)")
        #expect(Set(perTarget.compactMap { $0.labels["target"] }) == Set(chosen))

        // Discovered targets: each probed by exactly one replica's job.
        try eventually(timeout: .seconds(30)) { series("probe_success").count == 12 }
        let probed = series("count by (instance) (probe_success)")
        #expect(probed.count == 12 && probed.allSatisfy { $0.value == 1 }, "\(probed)")
        #expect(series("probe_success == 1").first?.labels["instance"] == "127.0.0.1:\(server.port)")
        let split = series("count by (job) (probe_success)").map { "\($0.labels["job"] ?? ""): \(Int($0.value))" }
        print("fleet split: configured \(perReplica.map { "\($0.labels["instance"] ?? ""): \(Int($0.value))" }), "
            + "discovered \(split.sorted())")

        // The dashboards' queries see both replicas' targets: a query with a target label shows all six.
        let queries = try PrometheusRulesTests.dashboardQueries().filter {
            $0.expr.contains("pgconn_up") && !$0.expr.contains("login")
        }
        #expect(!queries.isEmpty)
        for query in queries {
            // A rate needs two samples of each series: the replica scraped last may still lack its second.
            let complete = (try? eventually(timeout: .seconds(15)) {
                let result = series(query.expr)
                let targets = Set(result.compactMap { $0.labels["target"] })
                return !result.isEmpty && (targets.isEmpty || targets == Set(chosen))
            }) != nil
            let targets = Set(series(query.expr).compactMap { $0.labels["target"] }).sorted()
            #expect(complete, "\(query.dashboard) / \(query.panel): \(query.expr) shows \(targets)")
        }
        try eventually(timeout: .seconds(20)) {
            Set(series("target:pgconn_up:avg_over_time5m").compactMap { $0.labels["target"] }) == Set(chosen)
        }
    }
}
