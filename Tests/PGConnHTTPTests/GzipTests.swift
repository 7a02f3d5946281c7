import Foundation
import Testing

@testable import PGConnCore
@testable import PGConnHTTP

@Suite struct GzipTests {
    @Test(arguments: [
        ("gzip", true), ("GZIP", true), ("gzip, deflate, br", true), ("deflate, gzip;q=0.5", true), ("*", true),
        ("x-gzip", true), ("identity", false), ("gzip;q=0", false), ("gzip; q=0.0, deflate", false),
        ("br", false), ("", false),
    ])
    func acceptEncodingIsRead(header: String, accepted: Bool) {
        #expect(Gzip.isAccepted(by: header) == accepted)
    }

    @Test func noHeaderMeansNoCompression() {
        #expect(!Gzip.isAccepted(by: nil))
    }

    @Test func compressedBytesAreAGzipStreamThatGunzipReadsBack() throws {
        let text = (0..<2000).map { "pgconn_up{target=\"t\($0)\"} 1\n" }.joined()
        let compressed = try #require(Gzip.compress(Array(text.utf8)))
        #expect(compressed.prefix(2) == [0x1f, 0x8b], "gzip magic")
        #expect(compressed.count * 5 < text.utf8.count, "metrics text compresses more than fivefold")
        #expect(try gunzip(compressed) == text)
        #expect(try gunzip(try #require(Gzip.compress([]))) == "")
    }

    /// The output starts at an eighth of the input and grows: input that hardly compresses makes it grow many times.
    @Test func outputThatOutgrowsItsFirstBufferIsWholeAndCorrect() throws {
        var generator = SystemRandomNumberGenerator()
        let hex = Array("0123456789abcdef".utf8)
        let text = String(decoding: (0..<300_000).map { _ in hex[Int(generator.next() % 16)] }, as: UTF8.self)
        let compressed = try #require(Gzip.compress(Array(text.utf8)))
        #expect(compressed.count > text.utf8.count / 3, "random hex keeps about half its size")
        #expect(try gunzip(compressed) == text)
    }

    @Test func theRouterCompressesMetricsOnlyWhenAsked() throws {
        let page = String(repeating: "pgconn_up{target=\"a\"} 1\n", count: 100)
        let router = ExporterRouter(
            renderMetrics: { Array(page.utf8) }, isReady: { true },
            health: { HealthSnapshot(targets: [], policy: HealthPolicy()) }, version: "test")
        let plain = router.handle(HTTPRequest(path: "/metrics"))
        #expect(plain.header("Content-Encoding") == nil)
        #expect(plain.body == Array(page.utf8))
        let gzipped = router.handle(HTTPRequest(path: "/metrics", headers: ["accept-encoding": "gzip"]))
        #expect(gzipped.header("Content-Encoding") == "gzip")
        #expect(gzipped.header("Vary") == "Accept-Encoding")
        #expect(try gunzip(gzipped.body) == page)
    }

    /// Decompresses with the system's `gzip`, an independent reader of the format. The input is a file, so a
    /// large output cannot fill the pipe while the input is still being written.
    private func gunzip(_ bytes: [UInt8]) throws -> String {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("gzip-test-\(UUID().uuidString).gz")
        try Data(bytes).write(to: file)
        defer { try? FileManager.default.removeItem(at: file) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/gzip")
        process.arguments = ["-dc", file.path]
        let output = Pipe()
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        return String(decoding: data, as: UTF8.self)
    }
}
