import Foundation

/// The outcome of one finished child process.
struct CommandResult: Sendable {
    var status: Int32
    var stdout: String
    var stderr: String
}

/// Why a child process could not be run to completion.
struct CommandError: Error, CustomStringConvertible {
    var description: String
}

/// Runs `executable` with `arguments` to completion and captures its output.
///
/// Output goes to temporary files rather than pipes, so a chatty child can never block on a full pipe
/// while this thread waits for it. `stdin` (if any) is fed from a file too. On `timeout` the child gets
/// SIGTERM, then SIGKILL one second later, and the call throws.
func runCommand(
    _ executable: String, _ arguments: [String], stdin: String? = nil, environment: [String: String]? = nil,
    timeout: Duration = .seconds(60)
) throws -> CommandResult {
    let scratch = FileManager.default.temporaryDirectory
        .appendingPathComponent("pgconn-cmd-\(UUID().uuidString)", isDirectory: true)
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: scratch) }

    let outURL = scratch.appendingPathComponent("stdout")
    let errURL = scratch.appendingPathComponent("stderr")
    let inURL = scratch.appendingPathComponent("stdin")
    _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: inURL.path, contents: Data((stdin ?? "").utf8))

    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment {
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { _, new in new }
    }
    let outHandle = try FileHandle(forWritingTo: outURL)
    let errHandle = try FileHandle(forWritingTo: errURL)
    let inHandle = try FileHandle(forReadingFrom: inURL)
    defer {
        try? outHandle.close()
        try? errHandle.close()
        try? inHandle.close()
    }
    process.standardOutput = outHandle
    process.standardError = errHandle
    process.standardInput = inHandle
    let exited = DispatchSemaphore(value: 0)
    process.terminationHandler = { _ in exited.signal() }
    try process.run()

    if exited.wait(timeout: .now() + timeout.timeInterval) == .timedOut {
        process.terminate()
        if exited.wait(timeout: .now() + 1) == .timedOut { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
        throw CommandError(
            description: "\(([executable] + arguments).joined(separator: " ")) did not finish within \(timeout)")
    }
    process.waitUntilExit()  // Returns at once: the handler ran, but this also orders the status read.
    let stdout = (try? String(contentsOf: outURL, encoding: .utf8)) ?? ""
    let stderr = (try? String(contentsOf: errURL, encoding: .utf8)) ?? ""
    return CommandResult(status: process.terminationStatus, stdout: stdout, stderr: stderr)
}

extension Duration {
    /// The duration as Foundation's `TimeInterval` (seconds), for Dispatch and socket timeouts.
    var timeInterval: TimeInterval { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
