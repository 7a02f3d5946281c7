import Foundation
import PGConnCore
import Testing

/// The soak: 50 targets of the real exporter, each through a proxy of its own in front of one PostgreSQL, while
/// the proxies flap at random (seeded; every change is printed). `PGCONN_SOAK_SECONDS` sets its length:
/// 120 s in `make test`, 1,800 with `make soak`. Checked throughout and at the end:
/// - every counter on every scrape is at least what it was on the scrape before;
/// - resident memory and open descriptors do not grow after the warm-up: the second half's peak within 8 MB of
///   the first's, and a least-squares line through the second half under 100 descriptors an hour (and, in runs
///   of 10 minutes or more, under 100 MB an hour);
/// - once the proxies forward again, every target is up, and the event history agrees with the counters;
/// - the exporter is still running, and the server logged no ERROR from its sessions besides the statements
///   its own timeouts cancelled.
@Suite(.serialized) struct SoakTests {
    static let targets = 50

    @Test func fiftyFlappingTargetsLoseNothingAndGrowNothing() throws {
        let seconds = Int(ProcessInfo.processInfo.environment["PGCONN_SOAK_SECONDS"] ?? "") ?? 120
        let server = try TestPostgres.start(settings: ["log_line_prefix": "%m [%p] %a "])
        defer { server.cleanup() }
        let proxies = try (0..<Self.targets).map { _ in try TCPProxy(upstreamPort: server.port) }
        defer { for proxy in proxies { proxy.close() } }
        let directory = try TemporaryDirectory()
        var yaml = """
            defaults:
              probe_interval: 500ms
              probe_timeout: 400ms
              connect_timeout: 2s
              login_interval: 5s
              backoff: {initial: 100ms, max: 2s}
            targets:

            """
        for (index, proxy) in proxies.enumerated() {
            yaml +=
                "  - name: t\(index)\n    dsn: host=127.0.0.1 port=\(proxy.port) user=postgres "
                + "password=\(TestPostgres.superuserPassword) dbname=postgres sslmode=disable\n"
        }
        let (exporter, port) = try ExporterProcess.start(config: yaml, in: directory)
        defer { exporter.kill() }
        let allUp = { (page: String) in
            (0..<Self.targets).allSatisfy { page.contains("pgconn_up{target=\"t\($0)\"} 1\n") }
        }
        try eventually(timeout: .seconds(60)) { try allUp(httpGet(port: port, path: "/metrics").body) }

        var random = SplitMix64(seed: 2026_12_04)
        var restoreAt: [Int: ContinuousClock.Instant] = [:]
        var previous: [String: Double] = [:]
        var memory: [(Double, Double)] = []
        var descriptors: [(Double, Double)] = []
        var decreases: [String] = []
        var flaps = 0
        let clock = ContinuousClock()
        let start = clock.now
        let end = start + .seconds(seconds)
        var nextScrape = start
        while clock.now < end {
            // Flap: about two proxies a second change mode, each for 1 to 5 s.
            for (index, at) in restoreAt where clock.now >= at {
                proxies[index].setMode(.forward)
                restoreAt[index] = nil
            }
            let index = Int.random(in: 0..<Self.targets, using: &random)
            if restoreAt[index] == nil {
                let modes: [TCPProxy.Mode] = [
                    .blackhole, .reset, .latency(.milliseconds(450), jitter: .milliseconds(100)), .refuse,
                    .throttle(bytesPerSecond: 2000), .dropAfter(bytes: 300),
                ]
                let mode = modes[Int.random(in: 0..<modes.count, using: &random)]
                let hold = Duration.milliseconds(Int.random(in: 1000...5000, using: &random))
                proxies[index].setMode(mode)
                restoreAt[index] = clock.now + hold
                flaps += 1
                if flaps <= 20 || flaps % 100 == 0 { print("soak flap \(flaps): t\(index) \(mode) for \(hold)") }
            }
            if clock.now >= nextScrape {
                nextScrape = clock.now + .seconds(2)
                let page = try httpGet(port: port, path: "/metrics").body
                let elapsed = (clock.now - start).milliseconds / 1000
                for (series, value) in Self.counters(in: page) {
                    if let before = previous[series], value < before {
                        decreases.append("\(series): \(before) -> \(value)")
                    }
                    previous[series] = value
                }
                if let rss = ExporterProcessTests.value(page, "process_resident_memory_bytes") {
                    memory.append((elapsed, rss))
                }
                if let fds = ExporterProcessTests.value(page, "process_open_fds") { descriptors.append((elapsed, fds)) }
            }
            Thread.sleep(forTimeInterval: 0.5)
        }
        for proxy in proxies { proxy.setMode(.forward) }
        print("soak: \(flaps) flaps in \(seconds) s, \(memory.count) scrapes")

        #expect(decreases.isEmpty, "counters went down: \(decreases.prefix(10))")
        try eventually(timeout: .seconds(60)) { try allUp(httpGet(port: port, path: "/metrics").body) }
        #expect(exporter.isRunning)

        // Growth, after the warm-up (the first half: event rings and allocator arenas filling): the slope of a
        // least-squares line through the second half's samples, per hour, and its peak against the first's.
        let settled = Array(memory.suffix(memory.count / 2))
        let memorySlope = Self.slope(settled) * 3600
        let descriptorSlope = Self.slope(Array(descriptors.suffix(descriptors.count / 2))) * 3600
        let firstPeak = memory.prefix(memory.count - settled.count).map(\.1).max() ?? 0
        let secondPeak = settled.map(\.1).max() ?? 0
        print(
            "soak: RSS \(Int((memory.first?.1 ?? 0) / 1e6)) MB at the start, peaks \(Int(firstPeak / 1e6)) and "
                + "\(Int(secondPeak / 1e6)) MB in the two halves, settled slope \(Int(memorySlope / 1e6)) MB/h; fds "
                + "\(Int(descriptors.first?.1 ?? 0))-\(Int(descriptors.map(\.1).max() ?? 0)), slope \(Int(descriptorSlope))/h"
        )
        #expect(
            secondPeak <= firstPeak + 8e6, "resident memory peaked \((secondPeak - firstPeak) / 1e6) MB higher later")
        // The slope means something only once the warm-up is well over: in `make soak`, not in the 2-minute run,
        // whose second half still fills allocator arenas (docs/reliability.md, "Soak").
        if seconds >= 600 {
            #expect(memorySlope < 100e6, "resident memory grows \(memorySlope / 1e6) MB an hour after the warm-up")
        }
        // A short run's line is steep for one descriptor more at the end: growth means a steep line that also
        // climbs past the first half's peak.
        let descriptorPeaks = (
            descriptors.prefix(descriptors.count - descriptors.count / 2).map(\.1).max() ?? 0,
            descriptors.suffix(descriptors.count / 2).map(\.1).max() ?? 0
        )
        #expect(
            descriptorSlope < 100 || descriptorPeaks.1 <= descriptorPeaks.0 + 2,
            "open descriptors grow \(descriptorSlope) an hour, peaks \(descriptorPeaks)")
        let page = try httpGet(port: port, path: "/metrics").body
        let fds = try #require(ExporterProcessTests.value(page, "process_open_fds"))
        #expect(fds <= Double(Self.targets * 3 + 40), "\(fds) descriptors for \(Self.targets) targets at rest")

        // The event history tells the same story as the counters (while its ring has not wrapped).
        for target in 0..<Self.targets {
            let outages = ExporterProcessTests.value(page, "pgconn_outages_total{target=\"t\(target)\"}") ?? 0
            let events = try httpGet(port: port, path: "/api/v1/events?target=t\(target)").body
            let failing =
                events.components(separatedBy: #""kind":"probe","from":"succeeding","to":"failing""#).count - 1
            let total = events.components(separatedBy: #""kind":"#).count - 1
            if total < 256 {
                #expect(Double(failing) == outages, "t\(target): \(failing) failing events, \(outages) outages")
            }
        }

        // The server's log: no ERROR from the exporter's sessions but the statements its timeouts cancelled.
        let errors = server.serverLog().split(separator: "\n").filter {
            $0.contains(" pgconn_exporter") && $0.contains("ERROR:") && !$0.contains("canceling statement")
        }
        #expect(errors.isEmpty, "\(errors.prefix(5))")
    }

    /// Every `_total` sample of a page by its series (name and labels).
    static func counters(in page: String) -> [(String, Double)] {
        page.split(separator: "\n").compactMap { line in
            guard !line.hasPrefix("#"), let space = line.lastIndex(of: " ") else { return nil }
            let series = line[..<space]
            let name = series.prefix { $0 != "{" }
            guard name.hasSuffix("_total") || name.hasSuffix("_count") || name.hasSuffix("_sum") else { return nil }
            return Double(line[line.index(after: space)...]).map { (String(series), $0) }
        }
    }

    /// The slope of the least-squares line through `(x, y)` points; 0 for fewer than two.
    static func slope(_ points: [(Double, Double)]) -> Double {
        guard points.count >= 2 else { return 0 }
        let n = Double(points.count)
        let meanX = points.map(\.0).reduce(0, +) / n
        let meanY = points.map(\.1).reduce(0, +) / n
        let covariance = points.map { ($0.0 - meanX) * ($0.1 - meanY) }.reduce(0, +)
        let variance = points.map { ($0.0 - meanX) * ($0.0 - meanX) }.reduce(0, +)
        return variance == 0 ? 0 : covariance / variance
    }
}
