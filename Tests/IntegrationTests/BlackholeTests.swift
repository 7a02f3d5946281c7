import Foundation
@testable import PGConnCore
import PGConnHTTP
import PGConnPostgres
import Testing

/// Hosts that accept TCP and never answer, or stop answering mid-session: timeouts, and no one else waits.
@Suite(.serialized) struct BlackholeTests {
    @Test func silentHostTimesOutWhileOtherTargetsAndScrapesGoOn() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let blackhole = try BlackholeListener()
        defer { blackhole.close() }
        let fixture = try MonitorFixture([
            try testTarget(
                "silent", dsn: "host=127.0.0.1 port=\(blackhole.port) user=postgres",
                connectTimeout: .milliseconds(500), loginInterval: .seconds(1)),
            try testTarget("healthy", dsn: server.dsn(password: TestPostgres.superuserPassword)),
        ])
        let metrics = fixture.metrics
        let router = ExporterRouter(
            // No process_* families: reading /proc is the executable's job, and this test is about the monitor.
            renderMetrics: { metrics.render(wallClock: Date().timeIntervalSince1970, now: .now(), process: nil) },
            isReady: { fixture.monitor.isReady }, health: { HealthSnapshot(targets: [], policy: HealthPolicy()) }, version: "test")
        let http = HTTPServer(listenAddress: "127.0.0.1:0", handler: router.handle)
        try http.start()
        defer { http.stop() }

        try fixture.await("healthy") { $0.isSessionUp }
        let healthyProbes = fixture.series("healthy").probes

        // While the silent host holds connection attempts open, scrapes must stay fast.
        var latencies: [Duration] = []
        let clock = ContinuousClock()
        let until = clock.now + .seconds(2)
        while clock.now < until {
            let start = clock.now
            let response = try httpGet(port: http.boundPort, path: "/metrics", timeout: .seconds(2))
            latencies.append(clock.now - start)
            #expect(response.status == 200)
            #expect(response.body.contains("pgconn_up{target=\"healthy\"} 1"))
        }
        let sorted = latencies.sorted()
        let p50 = sorted[sorted.count / 2].milliseconds
        let p99 = sorted[min(sorted.count - 1, sorted.count * 99 / 100)].milliseconds
        print("/metrics during a black-holed target: \(sorted.count) scrapes, p50 \(p50) ms, p99 \(p99) ms, max \(sorted.last!.milliseconds) ms")
        #expect(sorted.last! < .seconds(1), "a scrape never waits for a database")

        let silent = fixture.series("silent")
        #expect(silent.connectionFailures[.timeout, default: 0] >= 1)
        #expect(silent.loginFailures[.timeout, default: 0] >= 1)
        #expect(!silent.isUp(now: .now()))
        #expect(blackhole.acceptedCount >= 1, "the monitor really reached the silent host")
        // The healthy target probed on schedule (every 200 ms) all along.
        #expect(fixture.series("healthy").probes >= healthyProbes + 7)
        #expect(fixture.series("healthy").probeFailures.values.reduce(0, +) == 0)
    }

    @Test func connectsWaitingForTheirTurnDoNotTimeOut() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let blackhole = try BlackholeListener()
        defer { blackhole.close() }
        // One connect at a time: the silent host holds the only turn for its whole connect_timeout (500 ms),
        // longer than the healthy targets' own 300 ms connect_timeout. Waiting is not counted against them.
        var targets = [
            try testTarget(
                "silent", dsn: "host=127.0.0.1 port=\(blackhole.port) user=postgres", connectTimeout: .milliseconds(500))
        ]
        for index in 0..<4 {
            targets.append(
                try testTarget(
                    "healthy\(index)", dsn: server.dsn(password: TestPostgres.superuserPassword),
                    connectTimeout: .milliseconds(300)))
        }
        let fixture = try MonitorFixture(targets, maxConcurrentConnects: 1)
        func page() -> String {
            String(decoding: fixture.metrics.render(wallClock: Date().timeIntervalSince1970, now: .now(), process: nil), as: UTF8.self)
        }
        // While the silent host holds the only turn, the others wait, and the gauges say so.
        try eventually(timeout: .seconds(5), poll: .milliseconds(5)) {
            let text = page()
            return text.contains("pgconn_exporter_connects_in_progress 1\n")
                && text.contains("pgconn_exporter_connects_waiting 4\n")
        }
        for index in 0..<4 {
            try fixture.await("healthy\(index)") { $0.isSessionUp }
            let series = fixture.series("healthy\(index)")
            #expect(series.totalConnectionFailures == 0, "healthy\(index): \(series.connectionFailures)")
            #expect(series.connectionAttempts == 1)
        }
        try fixture.await("silent") { $0.connectionFailures[.timeout, default: 0] >= 1 }
        #expect(page().contains("pgconn_exporter_connects_waiting 0\n"))
    }

    @Test func sessionThatStopsAnsweringIsDiscardedByTheProbeTimeout() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let proxy = try TCPProxy(upstreamPort: server.port)
        defer { proxy.close() }
        let dsn = "host=127.0.0.1 port=\(proxy.port) user=postgres password=\(TestPostgres.superuserPassword)"
        let fixture = try MonitorFixture([try testTarget("db", dsn: dsn, connectTimeout: .milliseconds(500))])
        try fixture.await("db") { $0.isSessionUp }

        proxy.setMode(.blackhole)
        let detection = try fixture.await("db") { $0.disconnects[.timeout] == 1 }
        print("detect a black-holed session: \(detection.milliseconds) ms (probe_interval 200ms, probe_timeout 150ms)")
        #expect(fixture.series("db").probeFailures[.timeout] == 1)
        try fixture.await("db") { $0.connectionFailures[.timeout, default: 0] >= 1 }

        proxy.setMode(.forward)
        try fixture.await("db") { $0.isSessionUp }
        #expect(fixture.series("db").resets == 1)
    }

    @Test func resetConnectionIsANetworkOrLostDisconnect() throws {
        let server = try TestPostgres.start()
        defer { server.cleanup() }
        let proxy = try TCPProxy(upstreamPort: server.port)
        defer { proxy.close() }
        let dsn = "host=127.0.0.1 port=\(proxy.port) user=postgres password=\(TestPostgres.superuserPassword)"
        let fixture = try MonitorFixture([try testTarget("db", dsn: dsn)])
        try fixture.await("db") { $0.isSessionUp }

        proxy.setMode(.reset)
        try fixture.await("db") { $0.totalDisconnects >= 1 }
        let reasons = Set(fixture.series("db").disconnects.filter { $0.value > 0 }.map(\.key))
        #expect(reasons.isSubset(of: [.network, .connectionLost]), "got \(reasons)")
        proxy.setMode(.forward)
        try fixture.await("db") { $0.isSessionUp }
    }
}
