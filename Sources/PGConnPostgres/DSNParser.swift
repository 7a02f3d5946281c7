import CLibPQ
public import PGConnCore

/// Parses connection strings with libpq's own parser, so the exporter accepts exactly what libpq accepts.
public enum DSNParser {
    /// Summarises a URI or key=value DSN for labels and pages; the password, if any, is dropped.
    ///
    /// Unset values get libpq's defaults as an application would see them: host `localhost` (libpq itself
    /// would use the default Unix socket), port 5432, database = user.
    public static func parse(_ dsn: String) -> Result<DSNSummary, DSNError> {
        guard !dsn.trimmingWhitespace().isEmpty else { return .failure(DSNError(message: "must not be empty")) }
        let values: [String: String]
        switch parse(keywordsOf: dsn) {
        case .success(let parsed): values = parsed
        case .failure(let error): return .failure(error)
        }
        func value(_ key: String) -> String? { values[key].flatMap { $0.isEmpty ? nil : $0 } }
        let user = value("user") ?? ""
        return .success(
            DSNSummary(
                host: value("host") ?? value("hostaddr") ?? "localhost",
                port: value("port") ?? "5432",
                database: value("dbname") ?? user,
                user: user,
                sslmode: value("sslmode") ?? "prefer"))
    }

    /// Every keyword the DSN sets (URI or key=value), as libpq's parser reads it; `nil` if it does not parse.
    static func values(of dsn: String) -> [String: String]? {
        try? parse(keywordsOf: dsn).get()
    }

    private static func parse(keywordsOf dsn: String) -> Result<[String: String], DSNError> {
        var errorMessage: UnsafeMutablePointer<CChar>?
        guard let options = PQconninfoParse(dsn, &errorMessage) else {
            let message = errorMessage.map { redactQuotedValue(String(cString: $0).trimmingWhitespace()) }
                ?? "cannot be parsed"
            if let errorMessage { PQfreemem(errorMessage) }
            return .failure(DSNError(message: message))
        }
        defer { PQconninfoFree(options) }
        var values: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            if let value = option.pointee.val { values[String(cString: keyword)] = String(cString: value) }
            option = option.advanced(by: 1)
        }
        return .success(values)
    }

    /// libpq quotes the offending word of a malformed key=value string (`missing "=" after "s3cret"`), which may
    /// be a password typed without its key, and repeats a malformed URI whole (`... in URI: "postgresql://u:pw@..."`):
    /// keep the message, drop the quoted text.
    static func redactQuotedValue(_ message: String) -> String {
        if let uri = message.range(of: " in URI: \"") { return String(message[..<uri.lowerBound]) + " in URI" }
        guard let range = message.range(of: "after \"") else { return message }
        guard let end = message[range.upperBound...].firstIndex(of: "\"") else { return message }
        return message.replacingCharacters(in: range.upperBound..<end, with: "...")
    }
}
