import CLibPQ
import Glibc
public import PGConnCore

/// Parses connection strings with libpq's own parser, so the exporter accepts exactly what libpq accepts.
public enum DSNParser {
    /// Summarises a URI or key=value DSN for labels and pages; the password, if any, is dropped.
    ///
    /// Unset values get libpq's defaults as an application would see them: host `localhost` (libpq itself
    /// would use the default Unix socket), port 5432, database = user.
    public static func parse(_ dsn: String) -> Result<DSNSummary, DSNError> {
        guard !dsn.trimmingWhitespace().isEmpty else { return .failure(DSNError(message: "must not be empty")) }
        var values: [String: String]
        switch parse(keywordsOf: dsn) {
        case .success(let parsed): values = parsed
        case .failure(let error): return .failure(error)
        }
        values.merge(environmentDefaults()) { dsn, _ in dsn }
        if let service = values["service"], !service.isEmpty {
            return .failure(
                DSNError(
                    message: "service \"\(service)\" (from the DSN or PGSERVICE) is not supported: libpq would read "
                        + "pg_service.conf and resolve its hosts inside the connect, blocking the I/O thread; "
                        + "write host, port and dbname in the DSN instead"))
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

    /// What libpq will really use: the DSN's keywords, then the environment's (`PGHOST`, `PGHOSTADDR`, `PGPORT`,
    /// `PGOPTIONS`, `PGGSSENCMODE`, ...) for the keywords the DSN leaves out.
    static func effectiveValues(of dsn: String) -> [String: String] {
        (values(of: dsn) ?? [:]).merging(environmentDefaults()) { dsn, _ in dsn }
    }

    /// The keywords libpq's environment variables set, from `PQconndefaults` (compiled-in defaults that are
    /// not from the environment, such as the socket directory, are left out: libpq applies them itself).
    static func environmentDefaults() -> [String: String] {
        guard let options = PQconndefaults() else { return [:] }
        defer { PQconninfoFree(options) }
        var values: [String: String] = [:]
        var option = options
        while let keyword = option.pointee.keyword {
            if let variable = option.pointee.envvar, getenv(variable) != nil, let value = option.pointee.val {
                values[String(cString: keyword)] = String(cString: value)
            }
            option = option.advanced(by: 1)
        }
        return values
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
