/// Everything wrong with a config file, found in one pass.
///
/// Each message starts with the path of the offending key (`targets[1].probe_timeout: ...`), except YAML syntax
/// and file read errors, which name a line and column or the file instead. Messages never contain a password:
/// DSN values are not echoed, only the DSN parser's message is.
public struct ConfigError: Error, Sendable, Equatable, CustomStringConvertible {
    /// One line per problem, in the order they were found.
    public var messages: [String]

    public init(messages: [String]) {
        self.messages = messages
    }

    /// The messages, one a line.
    public var description: String { messages.joined(separator: "\n") }
}

/// Why a connection string was rejected by the DSN parser that ``ConfigLoader`` is given.
///
/// The parser lives outside the core (PGConnPostgres wraps `PQconninfoParse`). Its message is reported under
/// `targets[i].dsn: `, so it must not contain the password.
public struct DSNError: Error, Sendable, Equatable, CustomStringConvertible {
    public var message: String

    public init(message: String) {
        self.message = message
    }

    public var description: String { message }
}
