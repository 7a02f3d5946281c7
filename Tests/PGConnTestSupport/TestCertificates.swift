public import Foundation

/// A throwaway PKI made with the openssl command line: a CA, a server certificate for 127.0.0.1 and
/// localhost, and a client certificate, all signed by the CA, in a temporary directory removed by `remove()`.
public struct TestCertificates: Sendable {
    public let directory: URL

    public var caCertificate: String { path("ca.crt") }
    public var serverCertificate: String { path("server.crt") }
    public var serverKey: String { path("server.key") }
    public var clientCertificate: String { path("client.crt") }
    public var clientKey: String { path("client.key") }

    /// - Parameter name: distinguishes the CA's subject, so two sets do not trust each other.
    public init(name: String = "pgconn test CA") throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("pgconn-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try openssl([
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
            "-subj", "/CN=\(name)", "-keyout", path("ca.key"), "-out", caCertificate,
        ])
        try issue("server", subject: "/CN=127.0.0.1", extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost")
        try issue("client", subject: "/CN=prometheus", extensions: "extendedKeyUsage=clientAuth")
    }

    public func path(_ name: String) -> String { directory.appendingPathComponent(name).path }

    public func bytes(_ name: String) throws -> [UInt8] { Array(try Data(contentsOf: URL(fileURLWithPath: name))) }

    public func remove() { try? FileManager.default.removeItem(at: directory) }

    private func issue(_ name: String, subject: String, extensions: String) throws {
        try openssl([
            "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-subj", subject,
            "-keyout", path("\(name).key"), "-out", path("\(name).csr"),
        ])
        try extensions.write(toFile: path("\(name).ext"), atomically: true, encoding: .utf8)
        try openssl([
            "x509", "-req", "-in", path("\(name).csr"), "-CA", caCertificate, "-CAkey", path("ca.key"),
            "-CAcreateserial", "-days", "2", "-extfile", path("\(name).ext"), "-out", path("\(name).crt"),
        ])
    }

    private func openssl(_ arguments: [String]) throws {
        let result = try run("/usr/bin/openssl", arguments)
        guard result.status == 0 else {
            throw TestCertificateError(message: "openssl \(arguments[0]): \(result.output)")
        }
    }
}

public struct TestCertificateError: Error, CustomStringConvertible {
    public var message: String
    public var description: String { message }
}

/// Runs a command to its end and returns its exit status and its output (stdout and stderr together).
public func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// curl over HTTPS: the HTTP status (0 when no response came: TLS refused, connection closed) and the body.
public func curl(_ url: String, _ options: [String] = []) throws -> (status: Int, body: String) {
    let result = try run(
        "/usr/bin/curl", ["-sS", "--max-time", "10", "-o", "-", "-w", "\n%{http_code}"] + options + [url])
    let lines = result.output.split(separator: "\n", omittingEmptySubsequences: false)
    let status = Int(lines.last ?? "") ?? 0
    return (status, lines.dropLast().joined(separator: "\n"))
}
