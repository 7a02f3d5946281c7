import Foundation
import Testing

@testable import PGConnCore

/// Mutation tests (random from the core's own `SplitMix64`, seeded, so a failure replays): the config loaders and the duration parser answer every input with a value or a clear
/// error, never a crash, a hang or an empty message. Seeds: Tests/Fuzz/config and Tests/Fuzz/webconfig.
@Suite struct PropertyTests {
    static let seeds = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz")

    /// One random change to `bytes`: a byte flipped, inserted or deleted, a line duplicated, dropped or
    /// re-indented, or a YAML token dropped in.
    static func mutate(_ bytes: [UInt8], _ random: inout SplitMix64) -> [UInt8] {
        var bytes = bytes
        let tokens = [
            ": ", "- ", "[", "]", "{", "}", "&a ", "*a", "<<: ", "!!str ", "\"", "'", "#", "\n", "  ", "\t", "~",
            "0s", "-1", "1e309", String(repeating: "x", count: 300),
        ]
        switch Int.random(in: 0..<6, using: &random) {
        case 0 where !bytes.isEmpty:
            bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
        case 1:
            bytes.insert(
                UInt8.random(in: 32...126, using: &random), at: Int.random(in: 0...bytes.count, using: &random))
        case 2 where !bytes.isEmpty:
            bytes.remove(at: Int.random(in: 0..<bytes.count, using: &random))
        case 3:
            var lines = bytes.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false).map(Array.init)
            guard !lines.isEmpty else { break }
            let index = Int.random(in: 0..<lines.count, using: &random)
            switch Int.random(in: 0..<3, using: &random) {
            case 0: lines.insert(lines[index], at: index)
            case 1: lines.remove(at: index)
            default: lines[index] = Array("  ".utf8) + lines[index]
            }
            bytes = Array(lines.joined(separator: [UInt8(ascii: "\n")]))
        default:
            let token = Array(tokens[Int.random(in: 0..<tokens.count, using: &random)].utf8)
            bytes.insert(contentsOf: token, at: Int.random(in: 0...bytes.count, using: &random))
        }
        return bytes
    }

    /// A DSN parser that accepts anything with a host, as the loader's contract needs (libpq's own is tested in
    /// PGConnPostgresTests).
    static func parseDSN(_ dsn: String) -> Result<DSNSummary, DSNError> {
        dsn.isEmpty
            ? .failure(DSNError(message: "empty"))
            : .success(DSNSummary(host: "h", port: "5432", database: "d", user: "u", sslmode: "prefer"))
    }

    @Test(arguments: ["config/example.yml", "webconfig/web.yml"])
    func mutatedConfigsAlwaysGiveAConfigOrErrors(seed name: String) throws {
        let original = Array(try Data(contentsOf: Self.seeds.appendingPathComponent(name)))
        var random = SplitMix64(seed: 20_261_204)
        let clock = ContinuousClock()
        let start = clock.now
        var loaded = 0
        var refused = 0
        for iteration in 0..<1500 {
            var bytes = original
            for _ in 0...Int.random(in: 0..<4, using: &random) { bytes = Self.mutate(bytes, &random) }
            let text = String(decoding: bytes, as: UTF8.self)
            let outcome: [String]? =
                name == "webconfig/web.yml"
                ? WebConfigLoader.load(yaml: text, directory: "/etc/pgconn").failureMessages
                : ConfigLoader.load(yaml: text, parseDSN: Self.parseDSN).failureMessages
            if let messages = outcome {
                refused += 1
                #expect(!messages.isEmpty && messages.allSatisfy { !$0.isEmpty }, "\(name) #\(iteration): \(text)")
            } else {
                loaded += 1
            }
        }
        print("\(name): 1500 mutations, \(loaded) loaded, \(refused) refused, in \(clock.now - start)")
        #expect(refused > 0, "the mutations reach the error paths")
    }

    @Test func durationsParseOrFailAndWhatParsesFormatsBack() {
        var random = SplitMix64(seed: 7)
        let alphabet = Array("0123456789smhdwyµ.-+ _")
        var parsed = 0
        for _ in 0..<20_000 {
            let length = Int.random(in: 0...12, using: &random)
            let text = String((0..<length).map { _ in alphabet[Int.random(in: 0..<alphabet.count, using: &random)] })
            do {
                let duration = try Duration(prometheus: text)
                parsed += 1
                #expect(duration >= .zero, "\(text)")
                #expect(try Duration(prometheus: duration.prometheusString) == duration, "\(text) round trip")
            } catch {
                #expect(!error.description.isEmpty)
            }
        }
        #expect(parsed > 0)
    }
}

extension Result {
    /// The messages of a failed load, `nil` when it loaded.
    fileprivate var failureMessages: [String]? {
        if case .failure(let error) = self { return (error as? ConfigError)?.messages ?? ["\(error)"] }
        return nil
    }
}
