import Foundation
import Testing

@testable import PGConnCore

/// Target bookkeeping across config changes, and the rendered `/metrics` page: a golden file, the exposition
/// grammar, one HELP and TYPE per family, no duplicate series, promtool's lint and the series budget.
///
/// Regenerate the golden file after a deliberate change of the output:
///
///     PGCONN_UPDATE_GOLDEN=1 swift test --scratch-path .build-metrics --filter MetricsStoreTests
///
/// which writes Fixtures/golden/two-targets.prom in the source tree (found through `#filePath`); review the diff.
@Suite struct MetricsStoreTests {
    /// The monitor keys the store by its own stable target ids; here a name's hash stands in for one.
    static func id(_ name: String) -> Int { name.hashValue }

    static func keyed(_ configs: [TargetConfig]) -> [(id: Int, config: TargetConfig)] {
        configs.map { (id($0.name), $0) }
    }

    static let buildInfo = BuildInfo(
        version: "0.1.0", revision: "abc1234", libpqVersion: "15.18", microhttpdVersion: "0.9.75")

    static func target(_ name: String, host: String = "db", labels: [(key: String, value: String)] = [])
        -> TargetConfig
    {
        TargetConfig(
            name: name, dsn: "host=\(host)",
            summary: DSNSummary(host: host, port: "5432", database: "postgres", user: "monitor", sslmode: "prefer"),
            labels: labels)
    }

    func names(_ store: MetricsStore) -> [String] { store.snapshot().map(\.name) }

    // MARK: - Targets

    @Test func setTargetsKeepsStayingDropsRemovedAndAddsNewAtZero() {
        let store = MetricsStore(buildInfo: Self.buildInfo)
        store.setTargets(Self.keyed([Self.target("a"), Self.target("b"), Self.target("c")]))
        #expect(names(store) == ["a", "b", "c"])
        for name in ["a", "b"] {
            store.update(Self.id(name)) { series in
                series.apply(.connectionAttempt, wallClock: 1)
                series.apply(.probeFailed(Failure(reason: .timeout, message: "slow")), wallClock: 1)
            }
        }

        store.setTargets(Self.keyed([Self.target("d"), Self.target("b"), Self.target("a")]))
        #expect(names(store) == ["d", "b", "a"], "config order, not insertion order")
        let byName = Dictionary(uniqueKeysWithValues: store.snapshot().map { ($0.name, $0) })
        #expect(byName["a"]?.probes == 1 && byName["a"]?.probeFailures[.timeout] == 1)
        #expect(byName["b"]?.connectionAttempts == 1)
        #expect(byName["d"]?.probes == 0 && byName["d"]?.connectionAttempts == 0)
        #expect(byName["c"] == nil)
        #expect(store.update(Self.id("c")) { _ in true } == nil, "a removed target's late observation is dropped")

        store.setTargets([])
        #expect(names(store).isEmpty)
        let page = String(
            decoding: store.render(wallClock: 0, now: MonotonicInstant(wallClock: 0), process: nil), as: UTF8.self)
        #expect(!page.contains("target=\""), "no per-target series left")
        #expect(page.contains("# TYPE pgconn_up gauge\n"), "families are still declared")
    }

    @Test func aRemovedAndReAddedTargetStartsFromZero() {
        let store = MetricsStore(buildInfo: Self.buildInfo)
        store.setTargets(Self.keyed([Self.target("a")]))
        store.update(Self.id("a")) { $0.apply(.reset, wallClock: 1) }
        store.setTargets([])
        store.setTargets(Self.keyed([Self.target("a")]))
        #expect(store.snapshot().first?.resets == 0)
    }

    /// A reload that changes a target's connection under the same name must show the new parameters in
    /// `pgconn_target_info` (and use the new probe settings for staleness), even if its counters are kept.
    @Test func aChangedTargetShowsItsNewParameters() {
        let store = MetricsStore(buildInfo: Self.buildInfo)
        store.setTargets(Self.keyed([Self.target("a", host: "old-host")]))
        var changed = Self.target("a", host: "new-host")
        changed.probeInterval = .seconds(30)
        changed.loginInterval = .zero
        store.setTargets(Self.keyed([changed]))
        let series = store.snapshot()[0]
        #expect(series.infoLabels.first?.value == "new-host")
        #expect(series.staleAfter == .seconds(62))
        #expect(series.loginEnabled == false)
    }

    @Test func updateReturnsTheBodysResultOrNilForAnUnknownName() {
        let store = MetricsStore(buildInfo: Self.buildInfo)
        store.setTargets(Self.keyed([Self.target("a")]))
        #expect(
            store.update(Self.id("a")) { series -> UInt64 in
                series.apply(.connectionAttempt, wallClock: 1)
                return series.connectionAttempts
            } == 1)
        var called = false
        #expect(store.update(Self.id("nope")) { _ in called = true } == nil)
        #expect(!called, "the body does not run for an unknown target")
    }

    @Test func anUnexpectedReasonGetsItsSeriesInReasonOrder() {
        let store = MetricsStore(buildInfo: Self.buildInfo)
        store.setTargets(Self.keyed([Self.target("a")]))
        store.update(Self.id("a")) { $0.apply(.probeFailed(Failure(reason: .refused, message: "x")), wallClock: 1) }
        let lines = String(
            decoding: store.render(wallClock: 1, now: MonotonicInstant(wallClock: 1), process: nil), as: UTF8.self
        )
        .split(separator: "\n").filter { $0.hasPrefix("pgconn_probe_failures_total{") }
        #expect(lines.first == #"pgconn_probe_failures_total{target="a",reason="refused"} 1"#)
        #expect(lines.count == 13)
    }

    @Test func loginUpIsAbsentWhenLoginChecksAreOff() {
        let store = MetricsStore(buildInfo: Self.buildInfo)
        var config = Self.target("a")
        config.loginInterval = .zero
        store.setTargets(Self.keyed([config, Self.target("b")]))
        let page = String(
            decoding: store.render(wallClock: 1, now: MonotonicInstant(wallClock: 1), process: nil), as: UTF8.self)
        #expect(!page.contains(#"pgconn_login_up{target="a"}"#))
        #expect(!page.contains(#"pgconn_login_up{target="b"}"#), "absent until the first check finishes")
        store.update(Self.id("b")) {
            $0.apply(LoginCheckStateMachine.Observation.failed(Failure(reason: .auth, message: "x"), duration: .zero))
        }
        let checked = String(
            decoding: store.render(wallClock: 1, now: MonotonicInstant(wallClock: 1), process: nil), as: UTF8.self)
        #expect(checked.contains(#"pgconn_login_up{target="b"} 0"#))
    }

    @Test func renderWithoutProcessStatsHasNoProcessFamilies() {
        let store = MetricsStore(buildInfo: Self.buildInfo)
        let page = String(
            decoding: store.render(wallClock: 1, now: MonotonicInstant(wallClock: 1), process: nil), as: UTF8.self)
        #expect(!page.contains("process_"))
        #expect(page.contains("pgconn_exporter_config_last_reload_successful 1\n"))
    }

    @Test func droppedLogLinesAddUpInOneCounter() {
        let store = MetricsStore(buildInfo: Self.buildInfo)
        let empty = String(
            decoding: store.render(wallClock: 1, now: MonotonicInstant(wallClock: 1), process: nil), as: UTF8.self)
        #expect(
            empty.contains(
                "# TYPE pgconn_exporter_log_lines_dropped_total counter\npgconn_exporter_log_lines_dropped_total 0\n"))
        store.recordLogLinesDropped(1)
        store.recordLogLinesDropped(41)
        let page = String(
            decoding: store.render(wallClock: 1, now: MonotonicInstant(wallClock: 1), process: nil), as: UTF8.self)
        #expect(page.contains("pgconn_exporter_log_lines_dropped_total 42\n"))
    }

    @Test func reloadAndLoopLagAreRecorded() {
        let store = MetricsStore(buildInfo: Self.buildInfo)
        store.recordReload(successful: true, wallClock: 1_700_000_000)
        store.recordReload(successful: false, wallClock: 1_700_000_500)
        store.recordLoopLag(seconds: 0.002)
        let page = String(
            decoding: store.render(wallClock: 1, now: MonotonicInstant(wallClock: 1), process: nil), as: UTF8.self)
        #expect(page.contains("pgconn_exporter_config_last_reload_successful 0\n"))
        #expect(
            page.contains("pgconn_exporter_config_last_reload_success_timestamp_seconds 1700000000\n"),
            "a failed reload keeps the last success's time")
        #expect(page.contains("pgconn_exporter_loop_lag_seconds_bucket{le=\"0.01\"} 1\n"))
        #expect(page.contains("pgconn_exporter_loop_lag_seconds_count 1\n"))
    }

    // MARK: - The rendered page

    @Test func renderMatchesTheGoldenFile() throws {
        let rendered = GoldenScenario.render()
        let url = GoldenScenario.goldenURL
        if ProcessInfo.processInfo.environment["PGCONN_UPDATE_GOLDEN"] == "1" {
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(rendered).write(to: url)
            print("wrote \(url.path)")
            return
        }
        let golden = try Data(contentsOf: url)
        if Array(golden) != rendered {
            let got = String(decoding: rendered, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            let want = String(decoding: golden, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
            let index =
                zip(got, want).enumerated().first { $0.element.0 != $0.element.1 }?.offset
                ?? min(got.count, want.count)
            let gotLine = index < got.count ? String(got[index]) : "<end>"
            let wantLine = index < want.count ? String(want[index]) : "<end>"
            Issue.record(
                """
                render() differs from \(url.lastPathComponent) at line \(index + 1):
                  got:  \(gotLine)
                  want: \(wantLine)
                (PGCONN_UPDATE_GOLDEN=1 rewrites the file after a deliberate change)
                """)
        }
    }

    @Test func thePasswordInTheDSNNeverAppears() {
        let page = String(decoding: GoldenScenario.render(), as: UTF8.self)
        #expect(GoldenScenario.primary.dsn.contains(":secret@"), "the fixture does carry a password")
        #expect(!page.contains("secret"))
        #expect(!page.contains("primary.password"), "nor the password file's path")
    }

    @Test func everySampleLineFollowsTheGrammar() throws {
        let page = try Exposition(GoldenScenario.render())
        #expect(page.problems == [])
        #expect(page.samples.count > 200, "both targets and the exporter's own series were parsed")
    }

    /// The checks above are only as good as the parser: it must reject what Prometheus rejects.
    @Test func theGrammarCheckRejectsBrokenPages() throws {
        let page = try Exposition(
            Array(
                """
                # HELP a A.
                # TYPE a gauge
                a{x="bad"quote"} 1
                b 2
                a{x="1",x="2"} 1
                a 1.0.0
                # TYPE c counter
                c_total 3

                """.utf8))
        #expect(
            page.problems == [
                #"line 3: not HELP, TYPE or a sample: a{x="bad"quote"} 1"#,
                "line 4: b outside its family (current: a)",
                #"line 5: a label name repeats: a{x="1",x="2"} 1"#,
                "line 6: not HELP, TYPE or a sample: a 1.0.0",
                "line 7: TYPE c not right after its HELP",
                "line 8: c_total outside its family (current: c)",
            ])
    }

    @Test func everyFamilyHasOneHelpAndOneTypeAndItsSamplesFollowThem() throws {
        let page = try Exposition(GoldenScenario.render())
        let helps = Dictionary(grouping: page.helps, by: { $0 }).filter { $0.value.count != 1 }
        let types = Dictionary(grouping: page.types.map(\.name), by: { $0 }).filter { $0.value.count != 1 }
        #expect(helps.isEmpty, "HELP more than once: \(helps.keys.sorted())")
        #expect(types.isEmpty, "TYPE more than once: \(types.keys.sorted())")
        #expect(Set(page.helps) == Set(page.types.map(\.name)), "every HELP has a TYPE and the reverse")
        #expect(page.types.count == 32 + 11 + 6, "per-target, exporter and process families")
    }

    @Test func noSeriesIsDuplicated() throws {
        let page = try Exposition(GoldenScenario.render())
        let keys = page.samples.map(\.seriesKey)
        let duplicates = Dictionary(grouping: keys, by: { $0 }).filter { $0.value.count > 1 }.keys.sorted()
        #expect(duplicates == [])
    }

    @Test func histogramBucketsAreCumulativeAndEndInCount() throws {
        let page = try Exposition(GoldenScenario.render())
        let histograms = page.types.filter { $0.type == "histogram" }.map(\.name)
        #expect(histograms.count == 5)
        for name in histograms {
            let buckets = page.samples.filter { $0.name == name + "_bucket" }
            let groups = Dictionary(grouping: buckets) { sample in
                sample.labels.filter { $0.key != "le" }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
            }
            for (series, samples) in groups {
                let values = samples.map(\.value)
                #expect(zip(values, values.dropFirst()).allSatisfy { $0 <= $1 }, "\(name){\(series)} not cumulative")
                #expect(samples.last?.labels.last?.value == "+Inf", "\(name){\(series)} does not end in +Inf")
                let count = page.samples.first { sample in
                    sample.name == name + "_count"
                        && sample.labels.map { "\($0.key)=\($0.value)" }.joined(separator: ",") == series
                }
                #expect(count?.value == values.last, "\(name){\(series)}: +Inf bucket != _count")
            }
        }
    }

    @Test(
        .enabled(if: Promtool.path != nil, "promtool is not on PATH (Debian package prometheus); lint skipped"))
    func promtoolFindsNoProblems() throws {
        let path = try #require(Promtool.path)
        let (status, output) = try Promtool.checkMetrics(GoldenScenario.render(), promtool: path)
        let lines = output.split(separator: "\n").map(String.init)
        #expect(lines == [], "promtool check metrics reported problems")
        #expect(status == 0)
    }

    /// The budget from DESIGN section 3: well under a third of postgres_exporter's ~500 series per database.
    @Test func seriesPerTargetStayUnderBudget() throws {
        let page = try Exposition(GoldenScenario.render())
        // The replica has no certificate expiry (its TLS session reported none) but a replay lag.
        for (name, expected) in [("primary", 109), ("replica", 109)] {
            let count = page.samples.filter { $0.labels.contains { $0.key == "target" && $0.value == name } }.count
            print("series for target=\"\(name)\": \(count)")
            #expect(count < 166)
            #expect(count == expected, "docs/metrics.md states this number: update it with the page")
        }
        let fixed = page.samples.filter { !$0.labels.contains { $0.key == "target" } }.count
        print("series without a target label (exporter and process): \(fixed)")
        #expect(fixed == 28, "docs/metrics.md states this number: update it with the page")
    }
}

extension MetricsStoreTests {
    // MARK: - The golden scenario

    /// Two targets driven through their real state machines with a manual clock: `primary` is up after a few
    /// probes, one failed probe and its short outage; `replica` lost its session, failed to reconnect twice and is
    /// in backoff, and its login checks fail. Everything is fixed, so the output is byte for byte stable.
    enum GoldenScenario {
        static let goldenURL = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Fixtures/golden/two-targets.prom")

        /// Unix time of monotonic t = 0.
        static let epoch = 1_700_000_000.0
        static let renderAt = 21.0

        static let process = ProcessStats(
            cpuSecondsTotal: 1.25, residentMemoryBytes: 12_345_678, virtualMemoryBytes: 234_567_890, openFDs: 17,
            maxFDs: 1024, startTimeSeconds: 1_699_999_990.5)

        static let primary = TargetConfig(
            name: "primary", dsn: "postgresql://monitor:secret@db1:5432/postgres?sslmode=verify-full",
            summary: DSNSummary(
                host: "db1", port: "5432", database: "postgres", user: "monitor", sslmode: "verify-full"),
            password: .file("/etc/pgconn/primary.password"), probeInterval: .seconds(5), probeTimeout: .seconds(2),
            loginInterval: .seconds(60), expect: .primary,
            labels: [("cluster", "main"), ("note", "rack \"A\\1\"\nrow 2")])

        static let replica = TargetConfig(
            name: "replica", dsn: "host=db2 port=5433 dbname=app user=monitor sslmode=require",
            summary: DSNSummary(host: "db2", port: "5433", database: "app", user: "monitor", sslmode: "require"),
            probeInterval: .seconds(5), probeTimeout: .seconds(2), loginInterval: .seconds(5),
            backoff: BackoffConfig(initial: .seconds(1), max: .seconds(8), multiplier: 2, jitter: 0), expect: .standby,
            labels: [("cluster", "main")])

        static func at(_ milliseconds: Int64) -> MonotonicInstant {
            MonotonicInstant(nanoseconds: milliseconds * 1_000_000)
        }

        /// One target's machines, feeding the store as the monitor does.
        struct Driver {
            let store: MetricsStore
            var session: SessionStateMachine
            var login: LoginCheckStateMachine

            init(_ config: TargetConfig, store: MetricsStore) {
                self.store = store
                session = SessionStateMachine(config: config, seed: 1)
                login = LoginCheckStateMachine(interval: config.loginInterval, timeout: config.connectTimeout, seed: 1)
            }

            typealias SessionEvent = (inout SessionStateMachine, MonotonicInstant) -> SessionStateMachine.Output
            typealias LoginEvent = (inout LoginCheckStateMachine, MonotonicInstant) -> LoginCheckStateMachine.Output

            mutating func run(_ ms: Int64, _ event: SessionEvent) {
                let output = event(&session, at(ms))
                let session = self.session
                store.update(MetricsStoreTests.id(session.config.name)) { series in
                    for observation in output.observations {
                        series.apply(observation, wallClock: epoch + Double(ms) / 1000)
                    }
                    series.sync(with: session)
                }
            }

            mutating func check(_ ms: Int64, _ event: LoginEvent) {
                let output = event(&login, at(ms))
                store.update(MetricsStoreTests.id(session.config.name)) { series in
                    for observation in output.observations { series.apply(observation) }
                }
            }

            /// Runs the next login check when it is due (a seeded time), taking `ms`, failing with `failure`.
            mutating func nextLoginCheck(taking ms: Int64, failing failure: Failure? = nil) {
                let due = (login.deadline!.nanoseconds + 999_999) / 1_000_000
                check(due) { m, t in m.timerFired(now: t) }
                check(due + ms) { m, t in failure.map { m.failed($0, now: t) } ?? m.succeeded(now: t) }
            }
        }

        static func render(detail: MetricsDetail = MetricsDetail()) -> [UInt8] {
            let store = MetricsStore(buildInfo: MetricsStoreTests.buildInfo)
            store.setDetail(detail)
            store.setTargets(MetricsStoreTests.keyed([primary, replica]))
            store.recordReload(successful: true, wallClock: epoch - 1)
            for lag in [0.000_05, 0.0003, 0.002] { store.recordLoopLag(seconds: lag) }
            store.recordLogLinesDropped(3)

            let version = "15.18 (Debian 15.18-0+deb12u1)"
            let syntax = Failure(reason: .queryError, sqlstate: "42P01", message: "relation \"x\" does not exist")

            var p = Driver(primary, store: store)
            p.run(0) { m, t in m.start(now: t) }
            let tls = TLSDetails(
                version: "TLSv1.3", cipher: "TLS_AES_256_GCM_SHA384", certificateNotAfter: 1_735_689_600)
            p.run(12) { m, t in m.connected(now: t, details: ConnectionDetails(host: "db1", port: "5432", tls: tls)) }
            let primaryFacts = ServerFacts(version: version, inRecovery: false, startTime: 1_699_990_000.25)
            p.run(14) { m, t in m.factsRead(primaryFacts, now: t) }
            p.run(15) { m, t in m.probeSucceeded(inRecovery: false, now: t) }
            p.run(5_014) { m, t in m.timerFired(now: t) }
            p.run(5_017) { m, t in m.probeSucceeded(inRecovery: false, now: t) }
            p.run(10_014) { m, t in m.timerFired(now: t) }
            p.run(10_044) { m, t in m.probeSucceeded(inRecovery: false, now: t) }
            p.run(15_014) { m, t in m.timerFired(now: t) }
            p.run(15_016) { m, t in m.probeFailed(syntax, leftTransactionOpen: false, now: t) }
            p.run(20_014) { m, t in m.timerFired(now: t) }
            p.run(20_016) { m, t in m.probeSucceeded(inRecovery: false, now: t) }
            p.check(0) { m, t in m.start(now: t) }
            p.nextLoginCheck(taking: 9)

            let terminated = Failure(reason: .adminShutdown, sqlstate: "57P01", message: "terminating connection")
            let refused = Failure(reason: .refused, message: "Connection refused")
            let startingUp = Failure(
                reason: .startingUp, sqlstate: "57P03", message: "the database system is starting up")

            var r = Driver(replica, store: store)
            r.run(0) { m, t in m.start(now: t) }
            r.run(20) { m, t in
                m.connected(
                    now: t,
                    details: ConnectionDetails(
                        host: "db2", port: "5433",
                        tls: TLSDetails(version: "TLSv1.2", cipher: "ECDHE-RSA-AES128-GCM-SHA256")))
            }
            let replicaFacts = ServerFacts(version: version, inRecovery: true, startTime: 1_699_980_000)
            r.run(22) { m, t in m.factsRead(replicaFacts, now: t) }
            r.run(23) { m, t in m.probeSucceeded(inRecovery: true, now: t) }
            r.run(5_022) { m, t in m.timerFired(now: t) }
            r.run(5_024) { m, t in m.probeSucceeded(inRecovery: true, now: t) }
            r.run(10_022) { m, t in m.timerFired(now: t) }
            r.run(10_025) { m, t in m.probeSucceeded(inRecovery: true, replayLag: 0.25, now: t) }
            r.run(15_000) { m, t in m.connectionLost(terminated, now: t) }
            r.run(16_000) { m, t in m.timerFired(now: t) }
            r.run(16_001) { m, t in m.connectFailed(refused, now: t) }
            r.run(18_001) { m, t in m.timerFired(now: t) }
            r.run(18_003) { m, t in m.connectFailed(startingUp, now: t) }
            r.check(0) { m, t in m.start(now: t) }
            r.nextLoginCheck(taking: 10)
            r.nextLoginCheck(taking: 8)
            r.nextLoginCheck(taking: 9)
            r.nextLoginCheck(taking: 1, failing: refused)
            r.nextLoginCheck(taking: 2, failing: startingUp)

            return store.render(
                wallClock: epoch + renderAt, now: MonotonicInstant(wallClock: epoch + renderAt), process: process)
        }
    }

    // MARK: - Reading the exposition back

    /// The rendered page parsed strictly: every line must be a comment (`# HELP`/`# TYPE`) or a sample.
    struct Exposition {
        struct Sample {
            var name: String
            var labels: [(key: String, value: String)]
            var value: Double
            /// Name and labels with label order normalised, so two spellings of one series compare equal.
            var seriesKey: String {
                let pairs = labels.sorted { $0.key < $1.key }.map { "\($0.key)=\"\($0.value)\"" }
                return name + "{" + pairs.joined(separator: ",") + "}"
            }
        }

        var helps: [String] = []
        var types: [(name: String, type: String)] = []
        var samples: [Sample] = []
        /// Every line that breaks the grammar or the family structure, with its number.
        var problems: [String] = []

        static let name = #"[a-zA-Z_:][a-zA-Z0-9_:]*"#
        static let label = #"([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)""#
        static let value = #"[+-]?(?:[0-9]+(?:\.[0-9]+)?(?:e[+-]?[0-9]+)?|Inf)|NaN"#
        static let sampleLine = "^(\(name))(\\{(?:\(label)(?:,\(label))*)?\\})? (\(value))$"

        init(_ bytes: [UInt8]) throws {
            let text = String(decoding: bytes, as: UTF8.self)
            guard text.hasSuffix("\n") else {
                problems.append("the page does not end with a newline")
                return
            }
            let sampleRegex = try Regex(Self.sampleLine)
            let labelRegex = try Regex(Self.label)
            let helpRegex = try Regex("^# HELP (\(Self.name)) [^\\n]*$")
            let typeRegex = try Regex("^# TYPE (\(Self.name)) (counter|gauge|histogram|summary|untyped)$")
            var family: (name: String, type: String)?
            for (index, raw) in text.dropLast().split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let line = String(raw)
                let number = index + 1
                if let match = try helpRegex.wholeMatch(in: line) {
                    helps.append(String(match.output[1].substring ?? ""))
                    family = nil
                } else if let match = try typeRegex.wholeMatch(in: line) {
                    let name = String(match.output[1].substring ?? "")
                    if helps.last != name { problems.append("line \(number): TYPE \(name) not right after its HELP") }
                    let type = String(match.output[2].substring ?? "")
                    types.append((name, type))
                    family = (name, type)
                } else if let match = try sampleRegex.wholeMatch(in: line) {
                    let name = String(match.output[1].substring ?? "")
                    let labelText = match.output[2].substring ?? ""
                    let labels = labelText.matches(of: labelRegex).map { label in
                        (key: String(label.output[1].substring ?? ""), value: String(label.output[2].substring ?? ""))
                    }
                    let valueText = String(match.output[match.output.count - 1].substring ?? "")
                    let value = Double(valueText.replacing("Inf", with: "inf")) ?? .nan
                    samples.append(Sample(name: name, labels: labels, value: value))
                    if Set(labels.map(\.key)).count != labels.count {
                        problems.append("line \(number): a label name repeats: \(line)")
                    }
                    if let family, !Self.belongs(name, to: family) {
                        problems.append("line \(number): \(name) outside its family (current: \(family.name))")
                    } else if family == nil {
                        problems.append("line \(number): sample before any TYPE: \(line)")
                    }
                } else {
                    problems.append("line \(number): not HELP, TYPE or a sample: \(line)")
                }
            }
        }

        static func belongs(_ sample: String, to family: (name: String, type: String)) -> Bool {
            if sample == family.name { return family.type != "histogram" }
            guard family.type == "histogram" else { return false }
            return ["_bucket", "_sum", "_count"].contains { sample == family.name + $0 }
        }
    }

    /// `promtool check metrics`, which lints the text format as Prometheus' own tooling sees it.
    enum Promtool {
        static let path: String? = {
            let directories = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
            return (directories + ["/usr/bin"]).map { $0 + "/promtool" }
                .first { FileManager.default.isExecutableFile(atPath: $0) }
        }()

        /// Runs the check with `page` on stdin; returns the exit status and stdout and stderr together.
        static func checkMetrics(_ page: [UInt8], promtool: String) throws -> (Int32, String) {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: promtool)
            process.arguments = ["check", "metrics"]
            let input = Pipe()
            let output = Pipe()
            process.standardInput = input
            process.standardOutput = output
            process.standardError = output
            try process.run()
            input.fileHandleForWriting.write(Data(page))
            try input.fileHandleForWriting.close()
            let data = output.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            return (process.terminationStatus, String(decoding: data, as: UTF8.self))
        }
    }
}
