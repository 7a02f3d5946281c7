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

    @Test func theRouterCompressesMetricsOnlyWhenAsked() throws {
        let page = String(repeating: "pgconn_up{target=\"a\"} 1\n", count: 100)
        let router = ExporterRouter(
            renderMetrics: { Array(page.utf8) }, isReady: { true }, health: { HealthSnapshot(targets: [], policy: HealthPolicy()) }, version: "test")
        let plain = router.handle(HTTPRequest(path: "/metrics"))
        #expect(plain.header("Content-Encoding") == nil)
        #expect(plain.body == Array(page.utf8))
        let gzipped = router.handle(HTTPRequest(path: "/metrics", headers: ["accept-encoding": "gzip"]))
        #expect(gzipped.header("Content-Encoding") == "gzip")
        #expect(gzipped.header("Vary") == "Accept-Encoding")
        #expect(try gunzip(gzipped.body) == page)
    }

    /// Decompresses with the system's `gzip`, an independent reader of the format.
    private func gunzip(_ bytes: [UInt8]) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/gzip")
        process.arguments = ["-dc"]
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        try process.run()
        input.fileHandleForWriting.write(Data(bytes))
        try input.fileHandleForWriting.close()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        #expect(process.terminationStatus == 0)
        return String(decoding: data, as: UTF8.self)
    }
}
