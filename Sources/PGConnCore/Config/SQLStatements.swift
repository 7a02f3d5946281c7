/// The statements of a SQL string, split the way PostgreSQL's lexer splits them, for checking a probe query.
///
/// Only as much lexing as finding the statements needs: a `;` ends a statement unless it is inside a comment
/// (`--` to the end of the line, `/* */`, which nest), a string (`'...'` with `''` inside; `E'...'` also with
/// backslash escapes), a quoted identifier (`"..."`) or a dollar-quoted body (`$tag$...$tag$`). Plain strings
/// are read as with `standard_conforming_strings = on`, the default since PostgreSQL 9.1. The query is not
/// otherwise parsed: the server still checks it on every probe.
enum SQLStatements {
    /// The first word of each non-empty statement, lowercased, in order.
    ///
    /// A statement that does not start with a word (a quoted identifier, a parenthesis) gives `""`, so a
    /// quoted `"copy"` is not the keyword COPY. Leading whitespace and comments are skipped.
    static func leadingWords(of sql: String) -> [String] {
        let bytes = Array(sql.utf8)
        var words: [String] = []
        var atStatementStart = true
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            let next = index + 1 < bytes.count ? bytes[index + 1] : 0
            if isSpace(byte) {
                index += 1
            } else if byte == UInt8(ascii: "-"), next == UInt8(ascii: "-") {
                index = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) ?? bytes.count
            } else if byte == UInt8(ascii: "/"), next == UInt8(ascii: "*") {
                index = endOfBlockComment(bytes, from: index)
            } else if byte == UInt8(ascii: ";") {
                atStatementStart = true
                index += 1
            } else {
                let end = endOfToken(bytes, from: index)
                if atStatementStart {
                    let word = isIdentifierStart(byte) ? String(decoding: bytes[index..<end], as: UTF8.self) : ""
                    words.append(word.lowercased())
                    atStatementStart = false
                }
                index = end
            }
        }
        return words
    }

    /// The index after the token starting at `start`: a word, a quoted string or identifier, a dollar-quoted
    /// body, or a single other character (operators are stepped through one character at a time, so a `--`
    /// or `/*` inside one still starts a comment, as in PostgreSQL).
    private static func endOfToken(_ bytes: [UInt8], from start: Int) -> Int {
        let byte = bytes[start]
        if isIdentifierStart(byte) {
            var end = start + 1
            while end < bytes.count, isIdentifierPart(bytes[end]) { end += 1 }
            let escapeString = end == start + 1 && (byte | 0x20) == UInt8(ascii: "e")
            if end < bytes.count, bytes[end] == UInt8(ascii: "'"), escapeString {
                return endOfQuoted(bytes, from: end, backslashEscapes: true)
            }
            return end
        }
        switch byte {
        case UInt8(ascii: "'"), UInt8(ascii: "\""): return endOfQuoted(bytes, from: start, backslashEscapes: false)
        case UInt8(ascii: "$"): return endOfDollarQuoted(bytes, from: start) ?? start + 1
        default: return start + 1
        }
    }

    /// The index after a `'...'` or `"..."` starting at `start`; a doubled quote stays inside.
    private static func endOfQuoted(_ bytes: [UInt8], from start: Int, backslashEscapes: Bool) -> Int {
        let quote = bytes[start]
        var index = start + 1
        while index < bytes.count {
            if backslashEscapes, bytes[index] == UInt8(ascii: "\\") {
                index += 2
            } else if bytes[index] == quote {
                guard index + 1 < bytes.count, bytes[index + 1] == quote else { return index + 1 }
                index += 2
            } else {
                index += 1
            }
        }
        return bytes.count
    }

    /// The index after a `$tag$...$tag$` body starting at `start`, or `nil` if no dollar quote starts there
    /// (`$1` is a parameter).
    private static func endOfDollarQuoted(_ bytes: [UInt8], from start: Int) -> Int? {
        var tagEnd = start + 1
        if tagEnd < bytes.count, isIdentifierStart(bytes[tagEnd]) {
            while tagEnd < bytes.count, isIdentifierPart(bytes[tagEnd]), bytes[tagEnd] != UInt8(ascii: "$") {
                tagEnd += 1
            }
        }
        guard tagEnd < bytes.count, bytes[tagEnd] == UInt8(ascii: "$") else { return nil }
        let tag = bytes[start...tagEnd]
        var index = tagEnd + 1
        while index + tag.count <= bytes.count {
            if bytes[index..<index + tag.count].elementsEqual(tag) { return index + tag.count }
            index += 1
        }
        return bytes.count
    }

    /// The index after a `/* */` comment starting at `start`, counting nested comments as PostgreSQL does.
    private static func endOfBlockComment(_ bytes: [UInt8], from start: Int) -> Int {
        var depth = 0
        var index = start
        while index + 1 < bytes.count {
            if bytes[index] == UInt8(ascii: "/"), bytes[index + 1] == UInt8(ascii: "*") {
                depth += 1
                index += 2
            } else if bytes[index] == UInt8(ascii: "*"), bytes[index + 1] == UInt8(ascii: "/") {
                depth -= 1
                index += 2
                if depth == 0 { return index }
            } else {
                index += 1
            }
        }
        return bytes.count
    }

    private static func isSpace(_ byte: UInt8) -> Bool {
        byte == 0x20 || (0x09...0x0D).contains(byte)
    }

    /// Letters, `_` and any non-ASCII byte, as in PostgreSQL's `ident_start`.
    private static func isIdentifierStart(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte | 0x20) || byte == UInt8(ascii: "_") || byte >= 0x80
    }

    /// `ident_start` plus digits and `$`.
    private static func isIdentifierPart(_ byte: UInt8) -> Bool {
        isIdentifierStart(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || byte == UInt8(ascii: "$")
    }
}
