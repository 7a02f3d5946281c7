import Foundation
import PGConnFuzzTargets
import Testing

/// The fuzz targets' seed corpora (Tests/Fuzz/<target>), crashes found by `make fuzz` included, replayed through
/// the same checks libFuzzer runs: a fixed input that once broke a property stays fixed in every `make test`.
@Suite struct FuzzCorpusTests {
    static let corpora = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Fuzz")

    @Test(arguments: FuzzTarget.allCases)
    func seedCorpusPasses(target: FuzzTarget) throws {
        let directory = Self.corpora.appendingPathComponent(target.rawValue)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).sorted()
        #expect(!files.isEmpty, "Tests/Fuzz/\(target.rawValue) has seeds")
        for file in files {
            // A failed property stops the process (fatalError) with the input's target in the message.
            target.run(Array(try Data(contentsOf: directory.appendingPathComponent(file))))
        }
    }
}
