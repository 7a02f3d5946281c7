import Foundation
import Logging
import PGConnCore
import PGConnLog

/// The two log line formats of the Go exporters (`--log.format`).
enum LogFormat: String, CaseIterable {
    case logfmt
    case json
}

/// A swift-log handler formatting one line per event, as logfmt or JSON, like the Go exporters:
/// `ts=2026-11-28T07:00:00.123Z level=info msg="session state changed" target=primary from=connecting to=up`.
///
/// The line goes to a ``LogWriter``, which writes it to stderr from its own thread: logging never blocks the
/// caller (the I/O loop) and never traps on a broken stderr.
struct StructuredLogHandler: LogHandler {
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    let format: LogFormat
    let label: String
    let writer: LogWriter

    init(label: String, format: LogFormat, level: Logger.Level, writer: LogWriter) {
        self.label = label
        self.format = format
        self.logLevel = level
        self.writer = writer
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [(String, String)] = [
            ("ts", Self.timestamp()), ("level", Self.levelName(event.level)), ("msg", "\(event.message)"),
        ]
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        // Known keys first in a fixed order, so lines about one target line up; the rest sorted.
        let order = ["target", "from", "to", "up", "login_up", "reason", "sqlstate", "message"]
        for key in order { if let value = merged[key] { fields.append((key, "\(value)")) } }
        for key in merged.keys.sorted() where !order.contains(key) { fields.append((key, "\(merged[key]!)")) }
        let line = format == .json ? Self.json(fields) : Self.logfmt(fields)
        writer.write(line)
    }

    static func levelName(_ level: Logger.Level) -> String {
        switch level {
        case .trace, .debug: "debug"
        case .info, .notice: "info"
        case .warning: "warn"
        case .error, .critical: "error"
        }
    }

    /// Parses `--log.level` values as the Go exporters spell them.
    static func level(named name: String) -> Logger.Level? {
        switch name {
        case "debug": .debug
        case "info": .info
        case "warn": .warning
        case "error": .error
        default: nil
        }
    }

    static func logfmt(_ fields: [(String, String)]) -> String {
        // One pass over the bytes: the I/O thread formats a line for every state change (5,000 in a storm).
        var line: [UInt8] = []
        for (index, (key, value)) in fields.enumerated() {
            if index > 0 { line.append(UInt8(ascii: " ")) }
            line.append(contentsOf: key.utf8)
            line.append(UInt8(ascii: "="))
            let needsQuotes = value.isEmpty || value.utf8.contains(where: Self.needsQuoting)
            guard needsQuotes else {
                line.append(contentsOf: value.utf8)
                continue
            }
            line.append(UInt8(ascii: "\""))
            for byte in value.utf8 {
                switch byte {
                case UInt8(ascii: "\\"), UInt8(ascii: "\""): line.append(contentsOf: [UInt8(ascii: "\\"), byte])
                case UInt8(ascii: "\n"): line.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
                case UInt8(ascii: "\r"): line.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
                default: line.append(byte)
                }
            }
            line.append(UInt8(ascii: "\""))
        }
        return String(decoding: line, as: UTF8.self)
    }

    /// A byte that makes a logfmt value quoted: space, `=`, a quote, a backslash or a line break.
    private static func needsQuoting(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "=") || byte == UInt8(ascii: "\"")
            || byte == UInt8(ascii: "\\")
            || byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r")
    }

    static func json(_ fields: [(String, String)]) -> String {
        "{" + fields.map { "\(JSONText.quoted($0)):\(JSONText.quoted($1))" }.joined(separator: ",") + "}"
    }

    private static func timestamp() -> String {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return RFC3339.format(Double(spec.tv_sec) + Double(spec.tv_nsec / 1_000_000) / 1000)
    }
}
