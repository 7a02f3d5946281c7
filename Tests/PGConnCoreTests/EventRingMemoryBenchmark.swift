import Foundation
import Testing

@testable import PGConnCore

/// Whether `make bench-memory` asked for the benchmarks (they allocate hundreds of MiB and print figures).
private func benchmarksRequested() -> Bool { ProcessInfo.processInfo.environment["PGCONN_BENCH"] == "1" }

/// The memory the event history takes with every ring full, measured as resident memory (not computed from
/// strides): 1,000 targets × 256 events, as a fleet that flapped for long would leave them. Run by
/// `make bench-memory`; the figures go to docs/benchmarks.md.
@Suite(.serialized, .enabled(if: benchmarksRequested())) struct EventRingMemoryBenchmark {
    static func residentBytes() -> Int {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return 0 }
        let fields = text.split(separator: " ")
        return (fields.count > 1 ? Int(fields[1]) ?? 0 : 0) * Int(sysconf(Int32(_SC_PAGESIZE)))
    }

    /// Fills `targets` full rings; every `failing`-th event carries a failure whose message is `length` bytes,
    /// a fresh string each time (as the loop's classified messages are), the same text again or a different one
    /// each time (`unique`). Returns the resident growth per target.
    static func measure(targets: Int, messageLength length: Int, failing: Int, unique: Bool) -> (
        perTarget: Double, total: Int
    ) {
        let store = MetricsStore(
            buildInfo: BuildInfo(version: "b", revision: "b", libpqVersion: "-", microhttpdVersion: "-"))
        store.setTargets(
            (0..<targets).map { id in
                (
                    id,
                    TargetConfig(
                        name: "t\(id)", dsn: "",
                        summary: DSNSummary(host: "h", port: "5432", database: "d", user: "u", sslmode: "prefer"))
                )
            })
        let before = residentBytes()
        for round in 0..<EventRing.capacity {
            for id in 0..<targets {
                let failure =
                    round % failing == 0
                    ? Failure(
                        reason: .refused,
                        message: String(repeating: "x", count: length - 12)
                            + " \(unique ? 100_000 + round * targets + id : 100_000 + id)")
                    : nil
                store.recordEvent(
                    id,
                    TargetEvent(
                        time: Double(round), kind: .state, from: failure == nil ? "connecting" : "up",
                        to: failure == nil ? "up" : "backoff", failure: failure))
            }
        }
        let grown = residentBytes() - before
        withExtendedLifetime(store) {}
        return (Double(grown) / Double(targets), grown)
    }

    @Test func fullRingsAtOneThousandTargets() {
        let cases: [(String, Int, Int, Bool)] = [
            ("flapping on one error (half the events with the same 120-byte message)", 120, 2, false),
            ("half the events with a different 120-byte message each", 120, 2, true),
            ("every event with a different 300-byte message (the cut-off; worst case)", 300, 1, true),
        ]
        for (label, length, failing, unique) in cases {
            let (perTarget, total) = Self.measure(
                targets: 1000, messageLength: length, failing: failing, unique: unique)
            print(
                "event rings, 1,000 targets x 256 events, \(label): "
                    + "\(String(format: "%.1f", Double(total) / 1_048_576)) MiB resident, "
                    + "\(String(format: "%.1f", perTarget / 1024)) KiB per target, "
                    + "\(Int(perTarget / Double(EventRing.capacity))) bytes per event")
            #expect(total > 0, "resident memory must grow while 256,000 events are stored")
        }
    }
}
