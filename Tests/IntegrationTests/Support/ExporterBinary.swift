import Foundation

/// Where the built `pgconn_exporter` executable is, for tests that run it as a child process.
///
/// `make test` exports `PGCONN_EXPORTER_BIN`; under a bare `swift test` the executable sits next to the test
/// runner (`<bin path>/pgconn_exporterPackageTests.xctest`), because SwiftPM builds every product there. The
/// integration target cannot depend on an executable target, so this lookup replaces the dependency.
enum ExporterBinary {
    static func url() throws -> URL {
        if let path = ProcessInfo.processInfo.environment["PGCONN_EXPORTER_BIN"], !path.isEmpty {
            guard FileManager.default.isExecutableFile(atPath: path) else {
                throw ExporterBinaryError(description: "PGCONN_EXPORTER_BIN=\(path) is not an executable")
            }
            return URL(fileURLWithPath: path)
        }
        let runner = URL(
            fileURLWithPath: (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
                ?? CommandLine.arguments[0])
        let candidate = runner.deletingLastPathComponent().appendingPathComponent("pgconn_exporter")
        guard FileManager.default.isExecutableFile(atPath: candidate.path) else {
            throw ExporterBinaryError(
                description: "no pgconn_exporter at \(candidate.path): run `swift build` or set PGCONN_EXPORTER_BIN")
        }
        return candidate
    }
}

/// The exporter executable could not be found.
struct ExporterBinaryError: Error, CustomStringConvertible {
    var description: String
}
