/// Turns what libpq or the server reported into a ``Failure`` with a bounded ``FailureReason``.
///
/// The SQLSTATE decides whenever there is one: passed in (from `PG_DIAG_SQLSTATE` of a result or notice), or
/// found in a connection-phase message built with `PQERRORS_VERBOSE` (`FATAL:  28P01: ...`). Only messages
/// without any SQLSTATE (socket, DNS, TLS and libpq's own errors) fall back to matching libpq 15's English
/// texts, so a localized libpq (`lc_messages`, `LANG`) degrades those to `other`, never to a wrong reason.
/// docs/reasons.md holds the full table and the reasoning behind each SQLSTATE class.
public enum FailureClassifier {
    /// The longest ``Failure/message`` this classifier produces, in characters (an ellipsis marks a cut).
    public static let maxMessageLength = 300

    /// A connect refused because the server is shutting down (57P03, "the database system is shutting down"):
    /// in a smart shutdown, which waits for every session to end, the server's existing sessions still work, so
    /// only a new connection tells. The text decides, because 57P03 also means starting up or in recovery.
    public static func isShutdownInProgress(_ failure: Failure) -> Bool {
        failure.reason == .startingUp && failure.message.contains("the database system is shutting down")
    }

    /// The reason for a five-character SQLSTATE; anything that is not a valid SQLSTATE gives `.other`.
    ///
    /// Specific codes are decided first, then whole classes. Classes of statement errors (syntax, data,
    /// integrity, transaction state, PL/pgSQL, ...) are `.queryError`; warnings, resource,
    /// system, configuration-file and internal errors, and classes PostgreSQL 15 does not define, are `.other`.
    public static func reason(forSQLState sqlstate: String) -> FailureReason {
        guard let code = normalizedSQLState(sqlstate) else { return .other }
        switch code {
        case "53300": return .tooManyConnections
        case "57014": return .timeout  // query_canceled: statement_timeout, our own cancel, authentication_timeout
        case "57P01": return .adminShutdown  // pg_terminate_backend, smart/fast and immediate shutdown
        case "57P02": return .crashShutdown
        case "57P03": return .startingUp  // cannot_connect_now: starting up, shutting down, recovery
        case "57P04": return .databaseMissing  // database_dropped (recovery conflict on a standby)
        case "57P05", "25P03": return .idleTimeout
        case "25006": return .readOnly
        case "42501": return .auth  // insufficient_privilege: at connect, the CONNECT privilege was revoked
        default: break
        }
        switch code.prefix(2) {
        case "28": return .auth
        case "3D": return .databaseMissing
        case "08": return .connectionLost
        case "03", "09", "0A", "0B", "0F", "0L", "0P", "0Z", "20", "21", "22", "23", "24", "25", "26", "27", "2B",
            "2D", "2F", "34", "38", "39", "3B", "3F", "40", "42", "44", "54", "55", "72", "HV", "P0":
            return .queryError
        default:
            // 00-02 (not errors), 53 (resources), 57000, 58 (system), F0 (config file), XX (internal), unknown.
            return .other
        }
    }

    /// The first SQLSTATE that follows a severity word in a `PQERRORS_VERBOSE` message, or nil.
    ///
    /// Recognizes `ERROR`, `FATAL`, `PANIC` and `WARNING` (an immediate shutdown's `57P01` comes as a
    /// WARNING) as a whole word followed by `:`, spaces, five characters of `[0-9A-Z]` and `:`. Anything
    /// around it (the `connection to server at ... failed: ` prefix, earlier attempts, DETAIL or LOCATION
    /// lines) is skipped.
    public static func sqlstate(fromVerboseMessage message: String) -> String? {
        let bytes = Array(message.utf8)
        var index = 0
        while index < bytes.count {
            if index == 0 || !isASCIIAlphanumeric(bytes[index - 1]),
                let code = sqlstate(afterSeverityAt: index, in: bytes)
            {
                return code
            }
            index += 1
        }
        return nil
    }

    /// The reason for a message that carries no SQLSTATE, by libpq 15's and PostgreSQL 15's English texts.
    ///
    /// The first matching rule wins; rules are ordered from the server's specific answers to generic socket
    /// errors, so a multi-address message (`::1` refused, `127.0.0.1` rejected the password) reports the
    /// more informative one, and an errno inside a TLS error (`SSL SYSCALL error: Connection reset by peer`)
    /// is not mistaken for a TLS problem.
    public static func reason(forLibpqMessage message: String) -> FailureReason {
        // Bytes, ASCII-lowercased: every rule is ASCII. Each failure on the I/O thread runs these 60-odd searches,
        // so they must be cheap: String.contains went through Foundation's NSString search (the most expensive
        // step of a disconnect during a 5,000-target storm).
        let text = message.utf8.map(asciiLowercased)
        for rule in textRules where rule.matches(text) {
            return rule.reason
        }
        return .other
    }

    /// Classifies a failure: the given SQLSTATE wins, then one found in a verbose message, then the text.
    ///
    /// The returned message is one line: `LOCATION:` lines (source positions added by verbose mode) are
    /// dropped, anything like `password=...` or a URI's `user:password@` is masked, messages on their own lines are
    /// joined with "; " (an indented sentence with ". "), whitespace runs become one space, and the result is capped at ``maxMessageLength`` characters.
    public static func classify(sqlstate: String?, message: String) -> Failure {
        let text = oneLineMessage(message)
        if let given = sqlstate, let code = normalizedSQLState(given) {
            return Failure(reason: reason(forSQLState: code), sqlstate: code, message: text)
        }
        if let code = self.sqlstate(fromVerboseMessage: message) {
            return Failure(reason: reason(forSQLState: code), sqlstate: code, message: text)
        }
        return Failure(reason: reason(forLibpqMessage: message), sqlstate: nil, message: text)
    }

    /// A message made fit for a log line or a page: one line, no password, at most ``maxMessageLength``.
    ///
    /// Works on UTF-8 bytes (whitespace is ASCII whitespace): every failure on the I/O thread comes through here,
    /// and splitting `Character`s (grapheme breaking) was a quarter of the loop's CPU when 5,000 sessions lost
    /// their connections at once.
    public static func oneLineMessage(_ message: String) -> String {
        let lines = message.utf8.split(separator: UInt8(ascii: "\n"), omittingEmptySubsequences: false)
        var kept: [UInt8] = []
        kept.reserveCapacity(message.utf8.count)
        for (index, line) in lines.enumerated() {
            if line.drop(while: { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }).starts(with: location) {
                continue
            }
            if index > 0 && !kept.isEmpty { kept.append(UInt8(ascii: "\n")) }
            kept.append(contentsOf: line)
        }
        // libpq starts each message (a host's attempt, DETAIL, LINE) on a line of its own and indents what
        // continues one (a wrapped sentence, a hint): "; " between messages, ". " before an indented sentence,
        // so "Connection refused\n\tIs the server running" reads "Connection refused. Is the server running".
        var collapsed: [UInt8] = []
        collapsed.reserveCapacity(kept.count)
        for line in maskingPasswords(kept).split(separator: UInt8(ascii: "\n")) {
            let words = line.split(whereSeparator: separatesWords)
            guard let firstWord = words.first else { continue }
            if let last = collapsed.last {
                let ended = Array(".?!:;".utf8).contains(last)
                if !separatesWords(line[line.startIndex]) {
                    collapsed.append(contentsOf: last == UInt8(ascii: ":") ? [UInt8(ascii: " ")] : Array("; ".utf8))
                } else {
                    collapsed.append(
                        contentsOf: !ended && startsUppercase(firstWord) ? Array(". ".utf8) : [UInt8(ascii: " ")])
                }
            }
            for (index, word) in words.enumerated() {
                if index > 0 { collapsed.append(UInt8(ascii: " ")) }
                collapsed.append(contentsOf: word)
            }
        }
        let text = String(decoding: collapsed, as: UTF8.self)
        // Bytes bound characters: only a long message needs counting.
        guard collapsed.count > maxMessageLength, text.count > maxMessageLength else { return text }
        return String(text.prefix(maxMessageLength - 1)) + "…"
    }

    private static let location = Array("LOCATION:".utf8)

    /// Whether a word starts with an upper-case letter (ASCII at once, anything else decoded).
    private static func startsUppercase(_ word: ArraySlice<UInt8>) -> Bool {
        let first = word[word.startIndex]
        if first < 0x80 { return first >= UInt8(ascii: "A") && first <= UInt8(ascii: "Z") }
        return String(decoding: word, as: UTF8.self).first?.isUppercase == true
    }
}

// MARK: - SQLSTATE parsing

extension FailureClassifier {
    private static let severities: [[UInt8]] = ["ERROR", "FATAL", "PANIC", "WARNING"].map { Array($0.utf8) }

    /// The trimmed, upper-cased SQLSTATE if `text` is five characters of `[0-9A-Za-z]`.
    private static func normalizedSQLState(_ text: String) -> String? {
        let code = text.trimmingWhitespace().uppercased()
        let bytes = Array(code.utf8)
        guard bytes.count == 5, bytes.allSatisfy(isSQLStateByte) else { return nil }
        return code
    }

    /// The SQLSTATE in `SEVERITY:  XXXXX:` starting at `start`, if that is what is there.
    private static func sqlstate(afterSeverityAt start: Int, in bytes: [UInt8]) -> String? {
        for word in severities {
            let end = start + word.count
            guard end < bytes.count, bytes[start..<end].elementsEqual(word), bytes[end] == UInt8(ascii: ":") else {
                continue
            }
            var index = end + 1
            guard index < bytes.count, bytes[index] == UInt8(ascii: " ") else { return nil }
            while index < bytes.count, bytes[index] == UInt8(ascii: " ") { index += 1 }
            let codeEnd = index + 5
            guard codeEnd < bytes.count, bytes[codeEnd] == UInt8(ascii: ":"),
                bytes[index..<codeEnd].allSatisfy(isSQLStateByte)
            else { return nil }
            return String(decoding: bytes[index..<codeEnd], as: UTF8.self)
        }
        return nil
    }

    private static func isSQLStateByte(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
    }

    private static func isASCIIAlphanumeric(_ byte: UInt8) -> Bool {
        isSQLStateByte(byte) || (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
    }
}

// MARK: - Text rules

extension FailureClassifier {
    /// One fallback rule: a reason and the lower-cased texts that select it.
    private struct TextRule: Sendable {
        var reason: FailureReason
        /// Any one of these substrings selects the rule.
        var anyOf: [[UInt8]]
        /// Each pair selects the rule when the text contains both parts, the first before the second.
        var pairs: [([UInt8], [UInt8])]

        init(reason: FailureReason, anyOf: [String] = [], pairs: [(String, String)] = []) {
            self.reason = reason
            self.anyOf = anyOf.map { Array($0.utf8) }
            self.pairs = pairs.map { (Array($0.0.utf8), Array($0.1.utf8)) }
        }

        func matches(_ text: [UInt8]) -> Bool {
            anyOf.contains { firstEnd(of: $0, in: text, from: 0) != nil }
                || pairs.contains { first, second in
                    guard let end = firstEnd(of: first, in: text, from: 0) else { return false }
                    return firstEnd(of: second, in: text, from: end) != nil
                }
        }

        /// Where the first occurrence of `needle` at or after `start` ends, if there is one.
        private func firstEnd(of needle: [UInt8], in text: [UInt8], from start: Int) -> Int? {
            guard let head = needle.first, text.count - start >= needle.count else { return nil }
            var index = start
            let last = text.count - needle.count
            while index <= last {
                if text[index] == head {
                    var matched = 1
                    while matched < needle.count && text[index + matched] == needle[matched] { matched += 1 }
                    if matched == needle.count { return index + needle.count }
                }
                index += 1
            }
            return nil
        }
    }

    /// The ordered fallback rules; see ``reason(forLibpqMessage:)`` and docs/reasons.md for the order.
    private static let textRules: [TextRule] = [
        // The server's own answers first: they say more than any socket error beside them.
        TextRule(
            reason: .auth,
            anyOf: [
                "password authentication failed", "authentication failed for user", "no pg_hba.conf entry",
                "pg_hba.conf rejects connection", "fe_sendauth:", "permission denied for database",
                "channel binding", "scram", "authentication method",
            ],
            pairs: [("role \"", "\" does not exist")]),
        TextRule(reason: .databaseMissing, pairs: [("database \"", "\" does not exist")]),
        TextRule(
            reason: .tooManyConnections,
            anyOf: ["too many clients", "remaining connection slots", "too many connections for"]),
        TextRule(
            reason: .startingUp,
            anyOf: [
                "the database system is starting up", "the database system is shutting down",
                "the database system is in recovery mode", "the database system is not yet accepting connections",
                "the database system is not accepting connections",
            ]),
        TextRule(
            reason: .adminShutdown,
            anyOf: [
                "terminating connection due to administrator command",
                "terminating connection due to immediate shutdown command",
                "terminating connection because of unexpected sigquit signal",
            ]),
        TextRule(reason: .crashShutdown, anyOf: ["terminating connection because of crash of another server process"]),
        TextRule(reason: .idleTimeout, anyOf: ["due to idle-session timeout", "due to idle-in-transaction timeout"]),
        TextRule(
            reason: .readOnly,
            anyOf: [
                "in a read-only transaction", "server is in hot standby mode", "server is not in hot standby mode",
                "session is read-only", "session is not read-only",
            ]),
        // Then the socket: errno texts (strerror) and libpq's resolver and timeout messages.
        TextRule(
            reason: .dns,
            anyOf: [
                "could not translate host name", "name or service not known", "temporary failure in name resolution",
                "no address associated with hostname", "nodename nor servname provided",
            ]),
        TextRule(
            reason: .refused, anyOf: ["connection refused"],
            pairs: [("on socket \"", "no such file or directory")]),
        TextRule(
            reason: .timeout,
            anyOf: [
                "timeout expired", "connection timed out", "canceling statement due to statement timeout",
                "canceling statement due to user request", "canceling authentication due to timeout",
            ]),
        TextRule(
            reason: .network,
            anyOf: [
                "network is unreachable", "no route to host", "connection reset by peer", "broken pipe",
                "host is down", "network is down", "software caused connection abort", "network dropped connection",
            ]),
        TextRule(
            reason: .connectionLost,
            anyOf: [
                "server closed the connection unexpectedly", "no connection to the server", "terminating connection",
                "eof detected", "unexpected eof", "ssl connection has been closed unexpectedly",
                "connection to server was lost", "lost synchronization with server", "connection not open",
            ]),
        // Last, because "ssl" also appears in errors whose cause is the socket (EOF, reset, timeout).
        TextRule(reason: .tls, anyOf: ["ssl", "certificate", "gssapi"]),
    ]
}

// MARK: - Password masking

extension FailureClassifier {
    private static let mask = Array("***".utf8)

    /// `text` with the value of every `password=` (any case, quoted or not) and every URI password masked.
    private static func maskingPasswords(_ text: String) -> String {
        String(decoding: maskingPasswords(Array(text.utf8)), as: UTF8.self)
    }

    private static func maskingPasswords(_ bytes: [UInt8]) -> [UInt8] {
        maskingURIPasswords(maskingKeyValuePasswords(bytes))
    }

    /// Masks the value after `password`, optional spaces, `=`, optional spaces (also `sslpassword=`).
    private static func maskingKeyValuePasswords(_ bytes: [UInt8]) -> [UInt8] {
        let key = Array("password".utf8)
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            guard index + key.count <= bytes.count,
                bytes[index..<index + key.count].lazy.map(asciiLowercased).elementsEqual(key)
            else {
                output.append(bytes[index])
                index += 1
                continue
            }
            var cursor = skippingSpaces(bytes, from: index + key.count)
            guard cursor < bytes.count, bytes[cursor] == UInt8(ascii: "=") else {
                output.append(contentsOf: bytes[index..<index + key.count])
                index += key.count
                continue
            }
            cursor = skippingSpaces(bytes, from: cursor + 1)
            output.append(contentsOf: bytes[index..<cursor])
            output.append(contentsOf: mask)
            index = endOfValue(bytes, from: cursor)
        }
        return output
    }

    /// Masks the password in every `scheme://user:password@` userinfo.
    private static func maskingURIPasswords(_ bytes: [UInt8]) -> [UInt8] {
        let separator = Array("://".utf8)
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = 0
        while index < bytes.count {
            guard index + separator.count <= bytes.count,
                bytes[index..<index + separator.count].elementsEqual(separator)
            else {
                output.append(bytes[index])
                index += 1
                continue
            }
            let authorityStart = index + separator.count
            var authorityEnd = authorityStart
            while authorityEnd < bytes.count, !isURIAuthorityEnd(bytes[authorityEnd]) { authorityEnd += 1 }
            let authority = bytes[authorityStart..<authorityEnd]
            output.append(contentsOf: separator)
            if let at = authority.lastIndex(of: UInt8(ascii: "@")),
                let colon = authority[..<at].firstIndex(of: UInt8(ascii: ":"))
            {
                output.append(contentsOf: bytes[authorityStart...colon])
                output.append(contentsOf: mask)
                output.append(contentsOf: bytes[at..<authorityEnd])
            } else {
                output.append(contentsOf: authority)
            }
            index = authorityEnd
        }
        return output
    }

    /// Where a conninfo value starting at `start` ends: after its closing quote, or at whitespace or `&`.
    private static func endOfValue(_ bytes: [UInt8], from start: Int) -> Int {
        guard start < bytes.count else { return start }
        let quote = bytes[start]
        if quote == UInt8(ascii: "'") || quote == UInt8(ascii: "\"") {
            var index = start + 1
            while index < bytes.count {
                if bytes[index] == UInt8(ascii: "\\") {
                    index += 2
                    continue
                }
                if bytes[index] == quote { return index + 1 }
                index += 1
            }
            return bytes.count
        }
        var index = start
        while index < bytes.count, !isValueEnd(bytes[index]) { index += 1 }
        return index
    }

    private static func skippingSpaces(_ bytes: [UInt8], from start: Int) -> Int {
        var index = start
        while index < bytes.count, bytes[index] == UInt8(ascii: " ") || bytes[index] == UInt8(ascii: "\t") {
            index += 1
        }
        return index
    }

    private static func isValueEnd(_ byte: UInt8) -> Bool {
        isASCIIWhitespace(byte) || byte == UInt8(ascii: "&") || byte == UInt8(ascii: "'") || byte == UInt8(ascii: "\"")
    }

    private static func isURIAuthorityEnd(_ byte: UInt8) -> Bool {
        isASCIIWhitespace(byte) || byte == UInt8(ascii: "/") || byte == UInt8(ascii: "?") || byte == UInt8(ascii: "#")
            || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "'")
    }

    private static func isASCIIWhitespace(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") || byte == UInt8(ascii: "\n")
            || byte == UInt8(ascii: "\r")
    }

    /// Whitespace between words of a message: ASCII whitespace with vertical tab and form feed.
    private static func separatesWords(_ byte: UInt8) -> Bool {
        isASCIIWhitespace(byte) || byte == 0x0B || byte == 0x0C
    }

    private static func asciiLowercased(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) ? byte + 32 : byte
    }
}
