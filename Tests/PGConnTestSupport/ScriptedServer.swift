import Foundation
import Glibc
package import PGConnCore
package import PGConnPostgres
import PGConnSync
import Synchronization

/// A scripted stand-in for a database server behind the monitor's connection seam.
///
/// Each connection is a socket pair: the monitor waits on one end with epoll as on a real socket, and the fake
/// makes it readable by writing a byte to the other end when the script says a reply has arrived. So the loop,
/// its timers and its epoll registrations run for real; only libpq and the server are scripted. What the
/// monitor did is counted here, as the server would see it: connections started and open, queries, cancels.
package final class ScriptedServer: ConnectionFactory, Sendable {
    package enum ConnectScript: Sendable {
        case ready
        case fail(Failure)
        /// Never completes: the connect deadline must end it.
        case hang
        /// The first poll blocks its thread (a connect worker) until the gate opens, then completes: a connect
        /// step that burns CPU, as SCRAM does.
        case blockUntil(Gate)
    }

    /// Opened once by a test, after which every waiter passes.
    package final class Gate: Sendable {
        private let opened = Lock(false)
        private let blocked = Lock(0)
        private let semaphore = DispatchSemaphore(value: 0)

        package init() {}

        /// How many threads have ever blocked at the gate: a step is known to be inside `wait()`, not about to
        /// enter it, once this counts it.
        package var waiters: Int { blocked.withLock { $0 } }

        package func open() {
            opened.withLock { $0 = true }
            semaphore.signal()
        }

        func wait() {
            guard !opened.withLock({ $0 }) else { return }
            blocked.withLock { $0 += 1 }
            semaphore.wait()
            semaphore.signal()  // the next waiter passes too
        }
    }

    package enum QueryScript: Sendable {
        case reply([QueryResultSummary], transactionOpen: Bool = false)
        /// Never answers: the probe timeout must end it.
        case hang
        /// The server closes the connection.
        case lose(String)
        /// A COPY OUT: libpq returns the same status again and again.
        case copy
        /// Replies, but reading the reply blocks the calling thread (the I/O thread) this long: a stalled loop.
        case stall(Duration)
    }

    package struct Counts: Sendable, Equatable {
        package var started = 0
        package var open = 0
        package var mostOpen = 0
        package var connecting = 0
        package var mostConnecting = 0
        package var queries: [String] = []
        package var cancels = 0
    }

    private let counts = Lock(Counts())
    private let connectScript: @Sendable (String) -> ConnectScript
    private let queryScript: @Sendable (String, String) -> QueryScript

    /// - Parameters:
    ///   - connect: the outcome of a connect, by DSN.
    ///   - query: the reply to a query, by DSN and SQL.
    package init(
        connect: @escaping @Sendable (String) -> ConnectScript = { _ in .ready },
        query: @escaping @Sendable (String, String) -> QueryScript = { _, _ in
            .reply([QueryResultSummary(status: .tuples, firstValue: "1")])
        }
    ) {
        self.connectScript = connect
        self.queryScript = query
    }

    package var snapshot: Counts { counts.withLock { $0 } }

    package func start(dsn: String, overrides: [(String, String)]) -> Result<any DatabaseConnection, Failure> {
        counts.withLock { counts in
            counts.started += 1
            counts.open += 1
            counts.mostOpen = max(counts.mostOpen, counts.open)
            counts.connecting += 1
            counts.mostConnecting = max(counts.mostConnecting, counts.connecting)
        }
        return .success(ScriptedConnection(server: self, dsn: dsn, connect: connectScript(dsn)))
    }

    fileprivate func record(_ change: (inout Counts) -> Void) { counts.withLock { change(&$0) } }
    fileprivate func script(dsn: String, sql: String) -> QueryScript { queryScript(dsn, sql) }
}

/// One scripted connection; used only on the monitor's I/O thread, like a real one.
final class ScriptedConnection: DatabaseConnection {
    private let server: ScriptedServer
    private let dsn: String
    private let connectScript: ScriptedServer.ConnectScript
    private var ends: [Int32] = [-1, -1]
    private var connecting = true
    private var pending: ScriptedServer.QueryScript?
    private var results: [QueryResultSummary] = []
    private var bad = false
    private var inTransaction = false

    init(server: ScriptedServer, dsn: String, connect: ScriptedServer.ConnectScript) {
        self.server = server
        self.dsn = dsn
        self.connectScript = connect
        socketpair(
            AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0,
            &ends)
    }

    deinit { close() }

    var socket: Int32 { ends[0] }

    func poll() -> ConnectPollStatus {
        switch connectScript {
        case .ready:
            finishConnecting()
            return .ready
        case .fail(let failure):
            finishConnecting()
            bad = true
            return .failed(failure)
        case .hang:
            return .wantRead
        case .blockUntil(let gate):
            gate.wait()
            finishConnecting()
            return .ready
        }
    }

    private func finishConnecting() {
        guard connecting else { return }
        connecting = false
        server.record { $0.connecting -= 1 }
    }

    func sendQuery(_ sql: String, singleRow: Bool) -> Bool {
        guard !bad else { return false }
        server.record { $0.queries.append(sql) }
        let script = server.script(dsn: dsn, sql: sql)
        pending = script
        if case .hang = script { return true }
        var byte: UInt8 = 1
        _ = write(ends[1], &byte, 1)  // the "reply" arrives
        return true
    }

    func flush() -> Result<Bool, Failure> { .success(true) }

    func consumeInput() -> Failure? {
        var buffer = [UInt8](repeating: 0, count: 64)
        _ = read(ends[0], &buffer, buffer.count)
        switch pending {
        case .lose(let message)?:
            bad = true
            pending = nil
            return Failure(reason: .connectionLost, message: message)
        case .reply(let replies, let transactionOpen)?:
            results = replies
            inTransaction = transactionOpen
            pending = nil
        case .stall(let duration)?:
            Thread.sleep(forTimeInterval: duration.seconds)
            results = [QueryResultSummary(status: .tuples, firstValue: "1")]
            pending = nil
        case .copy?, .hang?, nil:
            break
        }
        return nil
    }

    var isBusy: Bool {
        if case .hang? = pending { return true }
        return false
    }

    func nextResult() -> (result: QueryResultSummary, bytes: Int)? {
        if case .copy? = pending { return (QueryResultSummary(status: .unexpected("PGRES_COPY_OUT")), 0) }
        guard !results.isEmpty else { return nil }
        let result = results.removeFirst()
        return (result, (result.firstValue?.utf8.count ?? 0) + (result.secondValue?.utf8.count ?? 0))
    }

    var isBad: Bool { bad }
    var isInTransaction: Bool { inTransaction }
    func parameterStatus(_ name: String) -> String? { name == "server_version" ? "15.0 (scripted)" : nil }
    var errorMessage: String { bad ? "scripted failure" : "" }

    func makeCanceller() -> (any QueryCanceller)? { ScriptedCanceller(server: server) }

    func close() {
        guard ends[0] >= 0 else { return }
        finishConnecting()
        Glibc.close(ends[0])
        Glibc.close(ends[1])
        ends = [-1, -1]
        server.record { $0.open -= 1 }
    }
}

struct ScriptedCanceller: QueryCanceller {
    let server: ScriptedServer
    func cancel() -> String? {
        server.record { $0.cancels += 1 }
        return nil
    }
}
