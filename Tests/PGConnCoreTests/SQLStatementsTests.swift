import Testing

@testable import PGConnCore

@Suite struct SQLStatementsTests {
    static let cases: [(sql: String, words: [String])] = [
        ("COPY (SELECT 1) TO STDOUT", ["copy"]),
        ("copy(select 1) to stdout", ["copy"]),
        ("  \n\t-- a comment; COPY\n/* block; copy */ CoPy t FROM STDIN", ["copy"]),
        ("/* outer /* nested; */ still a comment; COPY */ SELECT 1", ["select"]),
        ("SELECT 1; COPY t TO STDOUT", ["select", "copy"]),
        ("SELECT 1;;  ; copy t TO STDOUT;", ["select", "copy"]),
        ("SELECT 'copy'", ["select"]),
        ("SELECT copy, copying FROM copy", ["select"]),
        ("SELECT 'it''s; COPY t TO STDOUT'", ["select"]),
        (#"SELECT E'\'; COPY t TO STDOUT'"#, ["select"]),
        (#"SELECT 'a\'; COPY t TO STDOUT"#, ["select", "copy"]),
        (#"SELECT "a"";copy"; COPY t TO STDOUT"#, ["select", "copy"]),
        ("SELECT $$; COPY t TO STDOUT$$", ["select"]),
        ("SELECT $body$ $$; COPY $$ $body$; COPY t TO STDOUT", ["select", "copy"]),
        ("SELECT $1; COPY t TO STDOUT", ["select", "copy"]),
        ("SELECT a$b; copy$ FROM t", ["select", "copy$"]),
        ("SELECT 1--; COPY t TO STDOUT", ["select"]),
        (#""copy" t TO STDOUT"#, [""]),
        ("(SELECT 1)", [""]),
        ("copying", ["copying"]),
        ("", []),
        (" ; -- nothing\n", []),
        ("SELECT 'unterminated; COPY", ["select"]),
        ("/* unterminated; COPY", []),
    ]

    @Test(arguments: cases)
    func leadingWords(sql: String, words: [String]) {
        #expect(SQLStatements.leadingWords(of: sql) == words)
    }
}
