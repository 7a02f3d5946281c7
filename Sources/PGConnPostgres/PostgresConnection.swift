import CLibPQ
import Glibc
import PGConnCore

/// One libpq connection, driven only through libpq's non-blocking calls.
///
/// The only owner of a `PGconn *`: nothing else sees the pointer. Every call returns at once; the caller
/// waits for the socket (epoll) between calls. Not thread-safe: the monitor's I/O thread is its only user,
/// which is why it is neither `Sendable` nor locked. ``close()`` must be called before the last reference goes.
final class PostgresConnection: DatabaseConnection {
    private var handle: OpaquePointer?
    /// The last notice or asynchronous error the server sent. A terminated backend's FATAL 57P01 arrives this
    /// way while the session is idle, and an immediate shutdown's as a notice: it names the reason the socket
    /// closed right after.
    private(set) var lastNotice: (sqlstate: String?, message: String)?

    private init(handle: OpaquePointer) {
        self.handle = handle
    }

    deinit {
        assert(handle == nil, "PostgresConnection released without close()")
        if let handle { PQfinish(handle) }
    }

    /// Starts a connection without blocking; the caller then waits for the socket to be writable and polls.
    ///
    /// - Parameters:
    ///   - dsn: a URI or key=value string, expanded by libpq (`expand_dbname`).
    ///   - overrides: keywords that win over the DSN (password, keepalives, application_name).
    static func start(dsn: String, overrides: [(String, String)]) -> Result<PostgresConnection, Failure> {
        let pairs = [("dbname", dsn)] + overrides
        let handle = withCStringArray(pairs.map(\.0)) { keywords in
            withCStringArray(pairs.map(\.1)) { values in
                PQconnectStartParams(keywords, values, 1)
            }
        }
        guard let handle else {
            return .failure(Failure(reason: .other, message: "libpq could not allocate a connection"))
        }
        let connection = PostgresConnection(handle: handle)
        if PQstatus(handle) == CONNECTION_BAD {
            let failure = FailureClassifier.classify(sqlstate: nil, message: connection.errorMessage)
            connection.close()
            return .failure(failure)
        }
        // Verbose errors carry the SQLSTATE in connection-phase messages, which have no PGresult.
        PQsetErrorVerbosity(handle, PQERRORS_VERBOSE)
        PQsetnonblocking(handle, 1)
        PQsetNoticeReceiver(handle, noticeReceiver, Unmanaged.passUnretained(connection).toOpaque())
        return .success(connection)
    }

    /// The socket to wait on; it can change during connect (several hosts), so read it after every poll.
    var socket: Int32 {
        guard let handle else { return -1 }
        return PQsocket(handle)
    }

    /// Advances the connect; call when the socket is ready for what the last status asked.
    func poll() -> ConnectPollStatus {
        guard let handle else { return .failed(Failure(reason: .other, message: "connection closed")) }
        switch PQconnectPoll(handle) {
        case PGRES_POLLING_READING: return .wantRead
        case PGRES_POLLING_WRITING: return .wantWrite
        case PGRES_POLLING_OK: return .ready
        default: return .failed(failure(fallbackMessage: "connection failed"))
        }
    }

    /// Whether the connection is still usable as libpq sees it.
    var isBad: Bool {
        guard let handle else { return true }
        return PQstatus(handle) == CONNECTION_BAD
    }

    /// Sends a simple-protocol query (several statements allowed). False when the connection is broken.
    /// Single-row mode lets the caller count rows and bytes as they arrive instead of after libpq buffered them all.
    func sendQuery(_ sql: String, singleRow: Bool) -> Bool {
        guard let handle, PQsendQuery(handle, sql) == 1 else { return false }
        if singleRow { _ = PQsetSingleRowMode(handle) }
        return true
    }

    /// Sends what libpq has buffered: `true` when all is sent, `false` when the socket must become writable first.
    /// Throws the failure when the connection broke.
    func flush() -> Result<Bool, Failure> {
        guard let handle else { return .failure(Failure(reason: .other, message: "connection closed")) }
        switch PQflush(handle) {
        case 0: return .success(true)
        case 1: return .success(false)
        default: return .failure(failure(fallbackMessage: "could not send data to server"))
        }
    }

    /// Reads what the socket has; a failure means the connection is gone.
    func consumeInput() -> Failure? {
        guard let handle else { return Failure(reason: .other, message: "connection closed") }
        let consumed = PQconsumeInput(handle) == 1
        // PQconsumeInput only buffers; PQisBusy parses. Parse now, so a FATAL sent to an idle session (a
        // terminated backend) or an immediate shutdown's notice reaches the notice receiver before the
        // end of the stream is turned into a failure.
        _ = PQisBusy(handle)
        if consumed && PQstatus(handle) != CONNECTION_BAD { return nil }
        return failure(fallbackMessage: "server closed the connection unexpectedly")
    }

    /// True while a result is still being received.
    var isBusy: Bool {
        guard let handle else { return false }
        return PQisBusy(handle) == 1
    }

    /// The next finished result and the size of its values, or `nil` when the query is complete. Only call
    /// when `isBusy` is false. A COPY or any other status a probe cannot produce comes back as `.unexpected`:
    /// libpq would return it again and again, so the caller must stop reading and discard the connection.
    func nextResult() -> (result: QueryResultSummary, bytes: Int)? {
        guard let handle, let result = PQgetResult(handle) else { return nil }
        defer { PQclear(result) }
        let pgStatus = PQresultStatus(result)
        let status: QueryResultSummary.Status =
            switch pgStatus {
            case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE: .tuples
            case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY: .command
            case PGRES_FATAL_ERROR, PGRES_NONFATAL_ERROR, PGRES_BAD_RESPONSE: .error
            default: .unexpected(String(cString: PQresStatus(pgStatus)))
            }
        var summary = QueryResultSummary(status: status)
        var bytes = 0
        if status == .tuples {
            let rows = PQntuples(result)
            let columns = PQnfields(result)
            for row in 0..<rows {
                for column in 0..<columns { bytes += Int(PQgetlength(result, row, column)) }
            }
            if rows > 0 {
                if columns > 0 && PQgetisnull(result, 0, 0) == 0 {
                    summary.firstValue = String(cString: PQgetvalue(result, 0, 0))
                }
                if columns > 1 && PQgetisnull(result, 0, 1) == 0 {
                    summary.secondValue = String(cString: PQgetvalue(result, 0, 1))
                }
            }
        }
        if status == .error {
            let severity = PQresultErrorField(result, PGCONN_DIAG_SEVERITY_NONLOCALIZED).map { String(cString: $0) }
            summary.isFatal = severity == "FATAL" || severity == "PANIC"
            summary.sqlstate = PQresultErrorField(result, PGCONN_DIAG_SQLSTATE).map { String(cString: $0) }
            let primary = PQresultErrorField(result, PGCONN_DIAG_MESSAGE_PRIMARY).map { String(cString: $0) }
            summary.message = primary ?? String(cString: PQresultErrorMessage(result))
        }
        return (summary, bytes)
    }

    /// The cancel key of the running query, for ``QueryCanceller/cancel()`` on a worker thread.
    func makeCanceller() -> (any QueryCanceller)? {
        guard let handle, let cancel = PQgetCancel(handle) else { return nil }
        return PostgresCanceller(cancel)
    }

    /// Whether the session sits inside a transaction (or an aborted one) after a query.
    var isInTransaction: Bool {
        guard let handle else { return false }
        let status = PQtransactionStatus(handle)
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR || status == PQTRANS_ACTIVE
    }

    /// A parameter the server reported at startup, such as `server_version`.
    func parameterStatus(_ name: String) -> String? {
        guard let handle, let value = PQparameterStatus(handle, name) else { return nil }
        return String(cString: value)
    }

    /// libpq's current error message, trimmed.
    var errorMessage: String {
        guard let handle, let message = PQerrorMessage(handle) else { return "" }
        return String(cString: message).trimmingWhitespace()
    }

    /// The server this connection reached (`PQhost`, `PQport`: with several hosts in the DSN, the one libpq
    /// settled on) and, over TLS, the protocol, cipher and the server certificate's expiry. Only memory reads.
    var details: ConnectionDetails? {
        guard let handle, let host = PQhost(handle).map({ String(cString: $0) }) else { return nil }
        let port = PQport(handle).map { String(cString: $0) } ?? ""
        var tls: TLSDetails?
        if PQsslInUse(handle) == 1 {
            let version = PQsslAttribute(handle, "protocol").map { String(cString: $0) } ?? ""
            let cipher = PQsslAttribute(handle, "cipher").map { String(cString: $0) } ?? ""
            let notAfter = pgconn_pq_peer_certificate_not_after(handle)
            tls = TLSDetails(
                version: version, cipher: cipher, certificateNotAfter: notAfter > 0 ? Double(notAfter) : nil)
        }
        return ConnectionDetails(host: host, port: port, tls: tls)
    }

    /// Closes the connection. Idempotent. `PQfinish` on a non-blocking connection sends Terminate at most once
    /// without waiting, so it never blocks the loop.
    func close() {
        guard let handle else { return }
        self.handle = nil
        PQfinish(handle)
    }

    /// The failure that explains the current error: the server's notice SQLSTATE if it sent one before
    /// closing, else libpq's (verbose) message.
    private func failure(fallbackMessage: String) -> Failure {
        let message = errorMessage.isEmpty ? fallbackMessage : errorMessage
        if let notice = lastNotice, let sqlstate = notice.sqlstate, sqlstate != "00000" {
            let noticed = FailureClassifier.classify(sqlstate: sqlstate, message: notice.message)
            if noticed.reason != .other && noticed.reason != .queryError { return noticed }
        }
        return FailureClassifier.classify(sqlstate: nil, message: message)
    }

    fileprivate func receive(notice result: OpaquePointer) {
        let sqlstate = PQresultErrorField(result, PGCONN_DIAG_SQLSTATE).map { String(cString: $0) }
        let message = PQresultErrorField(result, PGCONN_DIAG_MESSAGE_PRIMARY).map { String(cString: $0) } ?? ""
        lastNotice = (sqlstate, message)
    }

}

/// A `PGcancel`: the server's address and the backend's cancel key, copied out of the connection.
///
/// `@unchecked Sendable`: made on the I/O thread, then used and freed by exactly one worker; `PQcancel` is
/// documented as safe to call from any thread, and the `PGcancel` is independent of the connection (which
/// may be closed meanwhile).
final class PostgresCanceller: QueryCanceller, @unchecked Sendable {
    private let cancelHandle: OpaquePointer

    init(_ cancelHandle: OpaquePointer) { self.cancelHandle = cancelHandle }

    deinit { PQfreeCancel(cancelHandle) }

    func cancel() -> String? {
        var buffer = [CChar](repeating: 0, count: 256)
        guard PQcancel(cancelHandle, &buffer, Int32(buffer.count)) == 0 else { return nil }
        return buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }.trimmingWhitespace()
    }
}

/// Facts about the linked libpq.
public enum LibPQ {
    /// libpq's version as `15.18` (from `PQlibVersion`, e.g. 150018).
    public static var version: String {
        let version = Int(PQlibVersion())
        return version >= 100_000
            ? "\(version / 10000).\(version % 10000)" : "\(version / 10000).\(version / 100 % 100)"
    }
}

/// Receives server notices and asynchronous errors; also keeps libpq from printing them to stderr.
/// `arg` is the unretained connection, valid because `close()` (PQfinish) runs before the object goes.
private let noticeReceiver: PQnoticeReceiver = { arg, result in
    guard let arg, let result else { return }
    Unmanaged<PostgresConnection>.fromOpaque(arg).takeUnretainedValue().receive(notice: result)
}

/// Calls `body` with a NULL-terminated array of C strings that live for the call.
private func withCStringArray<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    var pointers: [UnsafeMutablePointer<CChar>?] = strings.map { strdup($0) }
    pointers.append(nil)
    defer { for pointer in pointers { free(pointer) } }
    return pointers.withUnsafeBufferPointer { buffer in
        buffer.baseAddress!.withMemoryRebound(to: UnsafePointer<CChar>?.self, capacity: buffer.count) { body($0) }
    }
}
