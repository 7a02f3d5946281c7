import Foundation
import Logging
import PGConnPostgres

// @testable: only ConfigLoader builds a ValidatedConfig or TargetConfig outside the module, and these tests want
// exact settings without going through YAML (`swift test` builds every module with testing enabled).
@testable import PGConnCore

/// A monitor running in this process against real servers, with its metrics store at hand.
///
/// Tests read the store's series (the same values `/metrics` renders) and await conditions on them.
final class MonitorFixture: @unchecked Sendable {
    // @unchecked: the fields are set once in init; Monitor and MetricsStore are thread-safe.
    let metrics: MetricsStore
    let monitor: Monitor

    init(_ targets: [TargetConfig], health: HealthPolicy = HealthPolicy(), maxConcurrentConnects: Int = 64) throws {
        metrics = MetricsStore(
            buildInfo: BuildInfo(version: "test", revision: "test", libpqVersion: LibPQ.version, microhttpdVersion: "-"))
        let logger = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }
        monitor = try Monitor(
            config: ValidatedConfig(health: health, targets: targets), metrics: metrics, logger: logger, seed: 42,
            maxConcurrentConnects: maxConcurrentConnects)
        monitor.start()
    }

    deinit { monitor.stop() }

    /// The current series of `name`; fails the caller's expectation if the target is unknown.
    func series(_ name: String) -> TargetSeries {
        guard let series = metrics.snapshot().first(where: { $0.name == name }) else {
            fatalError("no target named \(name)")
        }
        return series
    }

    /// Waits until `condition` holds for the target's series and returns how long that took.
    @discardableResult
    func await(
        _ name: String, timeout: Duration = .seconds(20), file: StaticString = #fileID, line: UInt = #line,
        _ condition: (TargetSeries) -> Bool
    ) throws -> Duration {
        let start = ContinuousClock.now
        try eventually(timeout: timeout, poll: .milliseconds(5), file: file, line: line) { condition(series(name)) }
        return ContinuousClock.now - start
    }
}

/// A target with fast intervals for tests; `dsn` is parsed with libpq's parser like the config loader does.
func testTarget(
    _ name: String, dsn: String, password: PasswordSource = .none, query: String = "SELECT 1",
    probeInterval: Duration = .milliseconds(200), probeTimeout: Duration = .milliseconds(150),
    connectTimeout: Duration = .seconds(2), loginInterval: Duration = .zero, expect: ExpectedRole = .any,
    backoff: BackoffConfig = BackoffConfig(initial: .milliseconds(50), max: .milliseconds(400), multiplier: 2, jitter: 0.2)
) throws -> TargetConfig {
    let summary = try DSNParser.parse(dsn).get()
    return TargetConfig(
        name: name, dsn: dsn, summary: summary, password: password, query: query, probeInterval: probeInterval,
        probeTimeout: probeTimeout, connectTimeout: connectTimeout, loginInterval: loginInterval,
        backoff: backoff, keepalives: .default, expect: expect)
}

extension TargetSeries {
    var isSessionUp: Bool { state == .up && probeHealthy }
    var totalDisconnects: UInt64 { disconnects.values.reduce(0, +) }
    var totalConnectionFailures: UInt64 { connectionFailures.values.reduce(0, +) }
}

extension Duration {
    var milliseconds: Double { Double(components.seconds) * 1000 + Double(components.attoseconds) / 1e15 }
}
