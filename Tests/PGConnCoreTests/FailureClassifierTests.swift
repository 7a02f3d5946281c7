import PGConnCore
import Testing

/// Messages captured from libpq 15 (`PQerrorMessage` after `PQsetErrorVerbosity(conn, PQERRORS_VERBOSE)`)
/// against PostgreSQL 15, unless marked as built from the source texts.
private enum Sample {
    static let wrongPassword = """
        connection to server at "127.0.0.1", port 54329 failed: FATAL:  28P01: password authentication failed \
        for user "postgres"
        LOCATION:  auth_failed, auth.c:334

        """
    static let hbaReject = """
        connection to server at "127.0.0.1", port 54329 failed: FATAL:  28000: pg_hba.conf rejects connection \
        for host "127.0.0.1", user "nobody", database "nobody", no encryption
        LOCATION:  ClientAuthentication, auth.c:476

        """
    static let noPassword =
        "connection to server at \"127.0.0.1\", port 54329 failed: fe_sendauth: no password supplied\n"
    static let noConnectPrivilege = """
        connection to server at "127.0.0.1", port 54329 failed: FATAL:  42501: permission denied for database "nocon"
        DETAIL:  User does not have CONNECT privilege.
        LOCATION:  CheckMyDatabase, postinit.c:363

        """
    static let databaseMissing = """
        connection to server at "127.0.0.1", port 54329 failed: FATAL:  3D000: database "nodb" does not exist
        LOCATION:  InitPostgres, postinit.c:948

        """
    static let slotsReserved = """
        connection to server at "127.0.0.1", port 54329 failed: FATAL:  53300: remaining connection slots are \
        reserved for non-replication superuser connections
        LOCATION:  InitPostgres, postinit.c:886

        """
    static let shuttingDown = """
        connection to server at "127.0.0.1", port 54329 failed: FATAL:  57P03: the database system is shutting down
        LOCATION:  ProcessStartupPacket, postmaster.c:2432

        """
    static let serverClosed = """
        server closed the connection unexpectedly
        \tThis probably means the server terminated abnormally
        \tbefore or while processing the request.

        """
    static let terminated = """
        FATAL:  57P01: terminating connection due to administrator command
        LOCATION:  ProcessInterrupts, postgres.c:3211

        """ + serverClosed
    static let idleSession = """
        FATAL:  57P05: terminating connection due to idle-session timeout
        LOCATION:  ProcessInterrupts, postgres.c:3374

        """ + serverClosed
    static let idleInTransaction = """
        FATAL:  25P03: terminating connection due to idle-in-transaction timeout
        LOCATION:  ProcessInterrupts, postgres.c:3363

        """ + serverClosed
    /// The notice an immediate shutdown sends, as the notice receiver gets it.
    static let immediateShutdown = """
        WARNING:  57P01: terminating connection due to immediate shutdown command
        LOCATION:  quickdie, postgres.c:2907

        """
    /// Built from PostgreSQL 15's quickdie() texts: the notice that a crash-and-restart cycle sends.
    static let crashOfAnother = """
        WARNING:  57P02: terminating connection because of crash of another server process
        DETAIL:  The postmaster has commanded this server process to roll back the current transaction and exit, \
        because another server process exited abnormally and possibly corrupted shared memory.

        """
    static let syntaxError = """
        ERROR:  42601: syntax error at or near "selec"
        LINE 1: selec 1
                ^
        LOCATION:  scanner_yyerror, scan.l:1188

        """
    static let readOnly = """
        ERROR:  25006: cannot execute CREATE TABLE in a read-only transaction
        LOCATION:  PreventCommandIfReadOnly, utility.c:414

        """
    static let statementTimeout = """
        ERROR:  57014: canceling statement due to statement timeout
        LOCATION:  ProcessInterrupts, postgres.c:3319

        """
    static let refusedTwice = """
        connection to server at "localhost" (::1), port 1 failed: Connection refused
        \tIs the server running on that host and accepting TCP/IP connections?
        connection to server at "localhost" (127.0.0.1), port 1 failed: Connection refused
        \tIs the server running on that host and accepting TCP/IP connections?

        """
    /// Two addresses: the first refused, the second rejected the password (the SQLSTATE wins).
    static let refusedThenWrongPassword = """
        connection to server at "localhost" (::1), port 5432 failed: Connection refused
        \tIs the server running on that host and accepting TCP/IP connections?
        connection to server at "localhost" (127.0.0.1), port 5432 failed: FATAL:  28P01: password \
        authentication failed for user "monitor"
        LOCATION:  auth_failed, auth.c:334

        """
    static let serverWithoutSSL = """
        connection to server at "127.0.0.1", port 54329 failed: server does not support SSL, but SSL was required

        """
    /// Captured against an HTTP server listening where PostgreSQL was expected.
    static let httpServerOnPort = """
        connection to server at "10.255.255.1", port 5432 failed: received invalid response to SSL negotiation: H

        """
    /// Built from PostgreSQL 15's message text (default verbosity).
    static let noHbaEntry = """
        FATAL:  no pg_hba.conf entry for host "10.0.0.9", user "monitor", database "postgres", no encryption

        """
    static let socketMissing = """
        connection to server on socket "/tmp/pgcls.Imrz/.s.PGSQL.54329" failed: No such file or directory
        \tIs the server running locally and accepting connections on that socket?

        """
}

@Suite struct FailureClassifierTests {
    // MARK: SQLSTATE -> reason

    static let sqlstateCases: [(String, FailureReason)] = [
        ("28000", .auth), ("28P01", .auth), ("42501", .auth),
        ("3D000", .databaseMissing), ("57P04", .databaseMissing),
        ("53300", .tooManyConnections),
        ("57P03", .startingUp),
        ("57P01", .adminShutdown),
        ("57P02", .crashShutdown),
        ("57P05", .idleTimeout), ("25P03", .idleTimeout),
        ("25006", .readOnly),
        ("57014", .timeout),
        ("08000", .connectionLost), ("08001", .connectionLost), ("08003", .connectionLost),
        ("08004", .connectionLost), ("08006", .connectionLost), ("08007", .connectionLost), ("08P01", .connectionLost),
        ("42601", .queryError), ("42P01", .queryError), ("42703", .queryError), ("42883", .queryError),
        ("22012", .queryError), ("22P02", .queryError), ("23505", .queryError), ("25P02", .queryError),
        ("25001", .queryError), ("40001", .queryError), ("40P01", .queryError), ("0A000", .queryError),
        ("21000", .queryError), ("2BP01", .queryError), ("34000", .queryError), ("3F000", .queryError),
        ("54001", .queryError), ("55000", .queryError), ("55P03", .queryError), ("72000", .queryError),
        ("HV000", .queryError), ("P0001", .queryError), ("P0004", .queryError), ("0Z002", .queryError),
        ("53000", .other), ("53100", .other), ("53200", .other), ("53400", .other),
        ("57000", .other), ("58000", .other), ("58030", .other), ("F0000", .other),
        ("XX000", .other), ("XX001", .other), ("00000", .other), ("01000", .other), ("02000", .other),
        ("ZZ999", .other), ("", .other), ("2800", .other), ("28P011", .other), ("28p01", .auth),
        (" 3D000 ", .databaseMissing),
    ]

    @Test(arguments: sqlstateCases)
    func reasonForSQLState(sqlstate: String, expected: FailureReason) {
        #expect(FailureClassifier.reason(forSQLState: sqlstate) == expected)
    }

    // MARK: verbose message -> SQLSTATE

    static let verboseCases: [(String, String?)] = [
        (Sample.wrongPassword, "28P01"),
        (Sample.hbaReject, "28000"),
        (Sample.noConnectPrivilege, "42501"),
        (Sample.databaseMissing, "3D000"),
        (Sample.slotsReserved, "53300"),
        (Sample.shuttingDown, "57P03"),
        (Sample.terminated, "57P01"),
        (Sample.immediateShutdown, "57P01"),
        (Sample.crashOfAnother, "57P02"),
        (Sample.syntaxError, "42601"),
        (Sample.refusedThenWrongPassword, "28P01"),
        ("PANIC:  XX000: could not locate a valid checkpoint record", "XX000"),
        ("ERROR: 22012: division by zero", "22012"),
        ("WARNING:  01000: first\nERROR:  42601: second", "01000"),
        // No SQLSTATE after the severity (default verbosity, or libpq's own warnings).
        ("FATAL:  password authentication failed for user \"postgres\"", nil),
        ("FATAL:  the database system is starting up", nil),
        ("WARNING: password file \"/root/.pgpass\" has group or world access", nil),
        (Sample.serverClosed, nil),
        (Sample.refusedTwice, nil),
        // A severity word must stand alone and be upper case; the code must be five [0-9A-Z] then a colon.
        ("XFATAL:  28P01: nope", nil),
        ("fatal:  28P01: nope", nil),
        ("FATAL:  28P0: nope", nil),
        ("FATAL:  28p01: nope", nil),
        ("FATAL:28P01: no space", nil),
        ("FATAL:  28P01", nil),
        ("", nil),
    ]

    @Test(arguments: verboseCases)
    func sqlstateFromVerboseMessage(message: String, expected: String?) {
        #expect(FailureClassifier.sqlstate(fromVerboseMessage: message) == expected)
    }

    // MARK: libpq text -> reason

    static let textCases: [(String, FailureReason)] = [
        (Sample.refusedTwice, .refused),
        (Sample.socketMissing, .refused),
        ("could not translate host name \"no-such-host.invalid\" to address: Name or service not known\n", .dns),
        ("could not translate host name \"db1\" to address: Temporary failure in name resolution\n", .dns),
        ("connection to server at \"10.0.0.1\", port 5432 failed: timeout expired\n", .timeout),
        ("could not receive data from server: Connection timed out\n", .timeout),
        ("ERROR:  canceling statement due to statement timeout\n", .timeout),
        ("ERROR:  canceling statement due to user request\n", .timeout),
        ("SSL SYSCALL error: Connection timed out\n", .timeout),
        ("connection to server at \"10.0.0.1\", port 5432 failed: Network is unreachable\n", .network),
        ("connection to server at \"10.0.0.1\", port 5432 failed: No route to host\n", .network),
        ("could not receive data from server: Connection reset by peer\n", .network),
        ("SSL SYSCALL error: Connection reset by peer\n", .network),
        ("could not send data to server: Broken pipe\n", .network),
        (Sample.serverWithoutSSL, .tls),
        (Sample.httpServerOnPort, .tls),
        ("connection to server at \"db1\" (10.0.0.1), port 5432 failed: SSL error: certificate verify failed\n", .tls),
        ("server certificate for \"db1\" does not match host name \"db2\"\n", .tls),
        (
            "root certificate file \"/root/.postgresql/root.crt\" does not exist\nEither provide the file or change "
                + "sslmode to disable server certificate verification.\n", .tls
        ),
        ("server doesn't support GSSAPI encryption, but it was required\n", .tls),
        (Sample.serverClosed, .connectionLost),
        ("no connection to the server\n", .connectionLost),
        ("SSL SYSCALL error: EOF detected\n", .connectionLost),
        ("SSL connection has been closed unexpectedly\n", .connectionLost),
        ("FATAL:  terminating connection due to unexpected postmaster exit\n", .connectionLost),
        ("lost synchronization with server: got message type \"x\", length 12\n", .connectionLost),
        (Sample.noPassword, .auth),
        (
            "connection to server at \"127.0.0.1\", port 5432 failed: FATAL:  password authentication failed for user "
                + "\"monitor\"\npassword retrieved from file \"/root/.pgpass\"\n", .auth
        ),
        (Sample.noHbaEntry, .auth),
        (
            "FATAL:  pg_hba.conf rejects connection for host \"127.0.0.1\", user \"nobody\", database \"nobody\"\n",
            .auth
        ),
        ("FATAL:  Peer authentication failed for user \"monitor\"\n", .auth),
        ("FATAL:  role \"ghost\" does not exist\n", .auth),
        ("FATAL:  permission denied for database \"nocon\"\nDETAIL:  User does not have CONNECT privilege.\n", .auth),
        ("channel binding required, but SSL not in use\n", .auth),
        ("FATAL:  database \"nodb\" does not exist\n", .databaseMissing),
        ("FATAL:  sorry, too many clients already\n", .tooManyConnections),
        (
            "FATAL:  remaining connection slots are reserved for non-replication superuser connections\n",
            .tooManyConnections
        ),
        ("FATAL:  too many connections for role \"monitor\"\n", .tooManyConnections),
        ("FATAL:  the database system is starting up\n", .startingUp),
        ("FATAL:  the database system is shutting down\n", .startingUp),
        ("FATAL:  the database system is in recovery mode\n", .startingUp),
        (
            "FATAL:  the database system is not yet accepting connections\nDETAIL:  Consistent recovery state has not "
                + "been yet reached.\n", .startingUp
        ),
        (
            "FATAL:  the database system is not accepting connections\nDETAIL:  Hot standby mode is disabled.\n",
            .startingUp
        ),
        ("FATAL:  terminating connection due to administrator command\n" + Sample.serverClosed, .adminShutdown),
        ("WARNING:  terminating connection due to immediate shutdown command\n", .adminShutdown),
        ("WARNING:  terminating connection because of crash of another server process\n", .crashShutdown),
        ("FATAL:  terminating connection due to idle-session timeout\n" + Sample.serverClosed, .idleTimeout),
        ("FATAL:  terminating connection due to idle-in-transaction timeout\n", .idleTimeout),
        ("ERROR:  cannot execute CREATE TABLE in a read-only transaction\n", .readOnly),
        ("connection to server at \"127.0.0.1\", port 54329 failed: server is not in hot standby mode\n", .readOnly),
        ("connection to server at \"127.0.0.1\", port 5432 failed: session is read-only\n", .readOnly),
        ("ERROR:  relation \"nope\" does not exist\n", .other),
        ("out of memory\n", .other),
        ("", .other),
    ]

    @Test(arguments: textCases)
    func reasonForLibpqMessage(message: String, expected: FailureReason) {
        #expect(FailureClassifier.reason(forLibpqMessage: message) == expected)
    }

    /// No text maps to `query_error` (a query error always carries a SQLSTATE), so the SQLSTATE table covers it.
    /// `password_unavailable` is never classified: the exporter sets it when it has no password to send; nor is
    /// `replication_lag`, which the session decides from the lag it reads.
    @Test func everyReasonIsCovered() {
        let covered = Set(Self.sqlstateCases.map(\.1) + Self.textCases.map(\.1))
        #expect(covered == Set(FailureReason.allCases).subtracting([.passwordUnavailable, .replicationLag]))
    }

    // MARK: classify

    static let classifyCases: [(String?, String, Failure)] = [
        (
            nil, Sample.wrongPassword,
            Failure(
                reason: .auth, sqlstate: "28P01",
                message: """
                    connection to server at "127.0.0.1", port 54329 failed: FATAL: 28P01: password authentication \
                    failed for user "postgres"
                    """)
        ),
        (
            nil, Sample.terminated,
            Failure(
                reason: .adminShutdown, sqlstate: "57P01",
                message: """
                    FATAL: 57P01: terminating connection due to administrator command; server closed the connection \
                    unexpectedly. This probably means the server terminated abnormally before or while processing the \
                    request.
                    """)
        ),
        (
            nil, Sample.idleSession,
            Failure(
                reason: .idleTimeout, sqlstate: "57P05",
                message: """
                    FATAL: 57P05: terminating connection due to idle-session timeout; server closed the connection \
                    unexpectedly. This probably means the server terminated abnormally before or while processing the \
                    request.
                    """)
        ),
        (
            nil, Sample.idleInTransaction,
            Failure(
                reason: .idleTimeout, sqlstate: "25P03",
                message: """
                    FATAL: 25P03: terminating connection due to idle-in-transaction timeout; server closed the \
                    connection unexpectedly. This probably means the server terminated abnormally before or while \
                    processing the request.
                    """)
        ),
        // The given SQLSTATE (PG_DIAG_SQLSTATE) wins over the message and over one inside it.
        (
            "25006", Sample.readOnly,
            Failure(
                reason: .readOnly, sqlstate: "25006",
                message: "ERROR: 25006: cannot execute CREATE TABLE in a read-only transaction")
        ),
        (
            "57014", "ERROR:  canceling statement due to statement timeout\n",
            Failure(reason: .timeout, sqlstate: "57014", message: "ERROR: canceling statement due to statement timeout")
        ),
        (
            "42601", Sample.syntaxError,
            Failure(
                reason: .queryError, sqlstate: "42601",
                message: "ERROR: 42601: syntax error at or near \"selec\"; LINE 1: selec 1 ^")
        ),
        (
            "57P01", Sample.serverClosed,
            Failure(
                reason: .adminShutdown, sqlstate: "57P01",
                message: """
                    server closed the connection unexpectedly. This probably means the server terminated abnormally \
                    before or while processing the request.
                    """)
        ),
        // An invalid given SQLSTATE is ignored.
        (
            "", Sample.statementTimeout,
            Failure(
                reason: .timeout, sqlstate: "57014",
                message: "ERROR: 57014: canceling statement due to statement timeout")
        ),
        // No SQLSTATE anywhere: the text decides.
        (
            nil, Sample.refusedTwice,
            Failure(
                reason: .refused,
                message: """
                    connection to server at "localhost" (::1), port 1 failed: Connection refused. Is the server \
                    running on that host and accepting TCP/IP connections?; connection to server at "localhost" \
                    (127.0.0.1), port 1 failed: Connection refused. Is the server running on that host and accepting \
                    TCP/IP connections?
                    """)
        ),
        (
            nil, Sample.refusedThenWrongPassword,
            Failure(
                reason: .auth, sqlstate: "28P01",
                message: """
                    connection to server at "localhost" (::1), port 5432 failed: Connection refused. Is the server \
                    running on that host and accepting TCP/IP connections?; connection to server at "localhost" \
                    (127.0.0.1), port 5432 failed: FATAL: 28P01: password authentication failed for user "monitor"
                    """)
        ),
        (
            nil, Sample.slotsReserved,
            Failure(
                reason: .tooManyConnections, sqlstate: "53300",
                message: """
                    connection to server at "127.0.0.1", port 54329 failed: FATAL: 53300: remaining connection slots \
                    are reserved for non-replication superuser connections
                    """)
        ),
        (
            nil, Sample.shuttingDown,
            Failure(
                reason: .startingUp, sqlstate: "57P03",
                message: """
                    connection to server at "127.0.0.1", port 54329 failed: FATAL: 57P03: the database system is \
                    shutting down
                    """)
        ),
        (nil, "  \n\t ", Failure(reason: .other, message: "")),
    ]

    @Test(arguments: classifyCases)
    func classify(sqlstate: String?, message: String, expected: Failure) {
        #expect(FailureClassifier.classify(sqlstate: sqlstate, message: message) == expected)
    }

    // MARK: message sanitizing

    static let passwordCases: [(String, String)] = [
        ("invalid dsn host=db1 password=s3cret user=x", "invalid dsn host=db1 password=*** user=x"),
        ("invalid dsn host=db1 PASSWORD = 's3 cr\\'et' user=x", "invalid dsn host=db1 PASSWORD = *** user=x"),
        (
            "bad postgresql://monitor:s3cret@db1:5432/postgres?sslmode=require",
            "bad postgresql://monitor:***@db1:5432/postgres?sslmode=require"
        ),
        (
            "bad postgresql://db1/postgres?user=monitor&password=s3cret&sslmode=require",
            "bad postgresql://db1/postgres?user=monitor&password=***&sslmode=require"
        ),
        ("sslpassword=abc\npassword=\"x y\"", "sslpassword=***; password=***"),
        (
            "FATAL:  password authentication failed for user \"monitor\"",
            "FATAL: password authentication failed for user \"monitor\""
        ),
        ("postgresql://db1:5432/postgres", "postgresql://db1:5432/postgres"),
    ]

    @Test(arguments: passwordCases)
    func masksPasswords(message: String, expected: String) {
        #expect(FailureClassifier.oneLineMessage(message) == expected)
        #expect(FailureClassifier.classify(sqlstate: nil, message: message).message == expected)
    }

    @Test func capsLongMessages() {
        let long = String(repeating: "abcdefghij ", count: 40)
        let message = FailureClassifier.oneLineMessage(long)
        #expect(message.count == FailureClassifier.maxMessageLength)
        #expect(message == String(long.prefix(299)) + "…")
        let exact = String(repeating: "x", count: 300)
        #expect(FailureClassifier.oneLineMessage(exact) == exact)
    }

    /// Bytes in, the same text out: CRLF line ends, `LOCATION:` lines, an indented sentence that starts with a
    /// non-ASCII capital (a localized server), and a cap counted in characters, not bytes.
    @Test func linesOfAnyKindBecomeOneLine() {
        #expect(
            FailureClassifier.oneLineMessage("FATAL:  base inexistante\r\nLOCATION:  x.c:12\r\n")
                == "FATAL: base inexistante")
        #expect(
            FailureClassifier.oneLineMessage("connexion refusée\n\tÉtes-vous sûr que le serveur tourne ?")
                == "connexion refusée. Étes-vous sûr que le serveur tourne ?")
        #expect(FailureClassifier.oneLineMessage("a:\nb\n  c\n\n  d.\n  E") == "a: b c d. E")
        let wide = String(repeating: "é", count: 200)  // 400 bytes, 200 characters: not cut
        #expect(FailureClassifier.oneLineMessage(wide) == wide)
        let wider = String(repeating: "é", count: 301)
        #expect(FailureClassifier.oneLineMessage(wider) == String(repeating: "é", count: 299) + "…")
    }

    @Test func capsAfterMaskingSoNoPasswordSurvivesTheCut() {
        let message = String(repeating: "y", count: 280) + " password=0123456789abcdefghij"
        #expect(message.count > FailureClassifier.maxMessageLength)
        #expect(FailureClassifier.oneLineMessage(message) == String(repeating: "y", count: 280) + " password=***")
    }

    @Test func failureDescriptionNamesReasonAndSQLState() {
        let failure = FailureClassifier.classify(sqlstate: nil, message: Sample.databaseMissing)
        #expect(
            failure.description == """
                database_missing (3D000): connection to server at "127.0.0.1", port 54329 failed: FATAL: 3D000: \
                database "nodb" does not exist
                """)
    }
}
