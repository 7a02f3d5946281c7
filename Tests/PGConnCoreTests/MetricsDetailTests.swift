import Testing

@testable import PGConnCore

/// `metrics: {histograms, reasons}`: the loader's checks, and how many series each choice leaves per target,
/// on the golden scenario's page (docs/metrics.md states the same numbers).
@Suite struct MetricsDetailTests {
    typealias Golden = MetricsStoreTests.GoldenScenario
    typealias Exposition = MetricsStoreTests.Exposition

    private static func load(_ metrics: String) -> Result<ValidatedConfig, ConfigError> {
        let yaml = "\(metrics)\ntargets:\n  - name: a\n    dsn: host=db\n"
        return ConfigLoader.load(yaml: yaml) { _ in
            .success(DSNSummary(host: "db", port: "", database: "", user: "", sslmode: ""))
        }
    }

    private static func errors(_ metrics: String) -> [String] {
        guard case .failure(let error) = load(metrics) else { return [] }
        return error.messages
    }

    private static func series(of target: String, in page: Exposition) -> [Exposition.Sample] {
        page.samples.filter { $0.labels.contains { $0.key == "target" && $0.value == target } }
    }

    @Test func withoutTheSectionEverythingIsShown() throws {
        let config = try Self.load("").get()
        #expect(config.metrics == MetricsDetail(histograms: .full, reasons: .all))
    }

    @Test func bothKeysAreRead() throws {
        let config = try Self.load("metrics:\n  histograms: coarse\n  reasons: seen").get()
        #expect(config.metrics == MetricsDetail(histograms: .coarse, reasons: .seen))
        #expect(try Self.load("metrics:\n  histograms: off").get().metrics.histograms == .off)
    }

    @Test func badValuesAreNamedWithTheirChoices() {
        #expect(
            Self.errors("metrics:\n  histograms: few")
                == [#"metrics.histograms: must be "full", "coarse" or "off", got "few""#])
        #expect(Self.errors("metrics:\n  reasons: 3") == [#"metrics.reasons: must be "all" or "seen", got "3""#])
        #expect(Self.errors("metrics:\n  buckets: off") == ["metrics.buckets: unknown key"])
        #expect(Self.errors("metrics: off").count == 1)
    }

    /// The table in docs/metrics.md ("Fewer series for large fleets"), for a healthy target with login checks
    /// and server facts: the primary of the golden scenario. With `reasons: seen` it has one reason counter,
    /// for its one failed probe; a target that never failed has one series fewer.
    @Test(arguments: [
        (MetricsDetail.Histograms.full, MetricsDetail.Reasons.all, 109),
        (.coarse, .all, 92), (.off, .all, 71),
        (.full, .seen, 62), (.coarse, .seen, 45), (.off, .seen, 24),
    ])
    func seriesPerHealthyTarget(histograms: MetricsDetail.Histograms, reasons: MetricsDetail.Reasons, count: Int)
        throws
    {
        let page = try Exposition(Golden.render(detail: MetricsDetail(histograms: histograms, reasons: reasons)))
        #expect(page.problems.isEmpty)
        #expect(Self.series(of: "primary", in: page).count == count, "docs/metrics.md states this number")
    }

    @Test func coarseBucketsAgreeWithTheFullOnesAtTheBoundsTheyKeep() throws {
        let full = try Exposition(Golden.render())
        let coarse = try Exposition(Golden.render(detail: MetricsDetail(histograms: .coarse)))
        for family in [
            "pgconn_probe_duration_seconds", "pgconn_connect_duration_seconds", "pgconn_outage_duration_seconds",
        ] {
            for target in ["primary", "replica"] {
                let fine = Self.series(of: target, in: full).filter { $0.name.hasPrefix(family) }
                let few = Self.series(of: target, in: coarse).filter { $0.name.hasPrefix(family) }
                #expect(few.filter { $0.name == family + "_bucket" }.count == 5, "4 bounds and +Inf")
                for sample in few {
                    let match = fine.first { $0.seriesKey == sample.seriesKey }
                    #expect(match?.value == sample.value, "\(sample.seriesKey)")
                }
            }
        }
        #expect(full.samples.contains { $0.name == "pgconn_probe_duration_seconds_bucket" && $0.value > 0 })
    }

    @Test func seenReasonsShowTheFailuresThatHappenedAndNoZeroes() throws {
        let page = try Exposition(Golden.render(detail: MetricsDetail(reasons: .seen)))
        let reasons = page.samples.filter { $0.labels.contains { $0.key == "reason" } }
        #expect(reasons.allSatisfy { $0.value > 0 })
        let replica = Set(
            reasons.filter { $0.labels.contains { $0 == ("target", "replica") } }.map {
                "\($0.name){\($0.labels.first { $0.key == "reason" }!.value)}"
            })
        #expect(
            replica == [
                "pgconn_disconnects_total{admin_shutdown}", "pgconn_connection_failures_total{refused}",
                "pgconn_connection_failures_total{starting_up}", "pgconn_login_failures_total{refused}",
                "pgconn_login_failures_total{starting_up}",
            ])
    }

    @Test func aNewDetailIsARareChangeAndTheSameOneIsNone() {
        let store = MetricsStore(buildInfo: MetricsStoreTests.buildInfo)
        let before = store.rareGeneration
        store.setDetail(MetricsDetail())
        #expect(store.rareGeneration == before)
        store.setDetail(MetricsDetail(histograms: .off))
        #expect(store.rareGeneration != before)
    }
}
