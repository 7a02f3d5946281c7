import Foundation

/// A throwaway server of one test (``TestPostgres``, ``TestPgBouncer``): startable again after a stop, and
/// cleaned up for good by ``cleanup()``.
protocol TestServer: AnyObject {
    func start() throws
    func cleanup()
}

/// One long-running server binary of a test (the postmaster, PgBouncer), its temp dir and its watchdog.
///
/// The binary runs as the server OS user (``ServerUser``) as a foreground child, never daemonised; since `runuser`
/// forks, signals go to the PID on the first line of `pidFile`. Its stdout and stderr are appended to `logFile`
/// across restarts. Every child starts with no signal blocked (see ``withSignalsUnblocked(_:)``).
///
/// Nothing is left behind: ``cleanup()`` runs from `deinit` too, and a watchdog shell process stops the server
/// (`immediateStop`, then SIGKILL after 10 seconds) and removes the temp dir if the test process dies without
/// cleaning up (a crash, a `fatalError`). Failures are thrown as ``TestPostgresError``, with the log.
///
/// `@unchecked Sendable`: the mutable state (the server and watchdog processes, whether it was cleaned up) is
/// only touched under `lock`; every other stored property is immutable. Methods block the calling thread while
/// they wait for the server, which is what a test wants.
final class ServerProcess: @unchecked Sendable {
    /// The name in messages, such as `postgres` or `pgbouncer`.
    let name: String
    /// The TCP port on 127.0.0.1 the server listens on.
    let port: Int
    /// The temp dir holding everything; removed by ``cleanup()``.
    let rootDir: URL
    let logFile: URL
    private let pidFile: URL
    private let command: (executable: String, arguments: [String])
    /// The signal of an immediate shutdown: on cleanup, on a failed start and from the watchdog.
    private let immediateStop: Int32

    private let lock = NSLock()
    private var process: Process?
    private var watchdog: Process?
    private var cleanedUp = false

    init(
        name: String, port: Int, rootDir: URL, logFile: URL, pidFile: URL, executable: String, arguments: [String],
        immediateStop: Int32
    ) {
        self.name = name
        self.port = port
        self.rootDir = rootDir
        self.logFile = logFile
        self.pidFile = pidFile
        self.command = (executable, arguments)
        self.immediateStop = immediateStop
    }

    deinit { cleanup() }

    // MARK: Creating

    /// Makes a server in a fresh temp dir (`<tmp>/<tempDirPrefix>-XXXXXX`) on a free port and starts it.
    ///
    /// A port taken between picking and binding (the start throws with `portInUse`) is retried with a new temp
    /// dir and port, three times at most. If `make` or the start throws, the server is cleaned up.
    static func startOnFreePort<Server: TestServer>(
        tempDirPrefix: String, make: (_ port: Int, _ rootDir: URL) throws -> Server
    ) throws -> Server {
        var lastError: (any Error)?
        for _ in 0..<3 {
            let rootDir = try makeTempDir(prefix: tempDirPrefix)
            let server: Server
            do {
                server = try make(TestPostgres.freePort(), rootDir)
            } catch {
                try? FileManager.default.removeItem(at: rootDir)
                throw error
            }
            do {
                try server.start()
                return server
            } catch let error as TestPostgresError where error.portInUse {
                server.cleanup()
                lastError = error
            } catch {
                server.cleanup()
                throw error
            }
        }
        throw lastError ?? TestPostgresError("could not start \(tempDirPrefix) on a free port")
    }

    private static func makeTempDir(prefix: String) throws -> URL {
        let template = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-XXXXXX").path
        var buffer = Array(template.utf8CString)
        guard let made = mkdtemp(&buffer) else {
            throw TestPostgresError("mkdtemp \(template) failed: \(String(cString: strerror(errno)))")
        }
        return URL(fileURLWithPath: String(cString: made), isDirectory: true)
    }

    // MARK: Starting

    /// Starts the server and waits until `isReady` says it accepts connections (it is asked only once the PID file
    /// names a PID); throws with the log if the server exits first or is not ready within `timeout`.
    func start(timeout: Duration, isReady: () throws -> Bool) throws {
        try lock.withLock {
            guard !cleanedUp else { throw TestPostgresError("start() after cleanup()") }
            guard process == nil else { throw TestPostgresError("start(): \(name) is already running") }
            let log = try FileHandle(forWritingTo: logFile)
            defer { try? log.close() }
            try log.seekToEnd()
            let user = try ServerUser.command(command.executable, command.arguments)
            let child = Process()
            child.executableURL = URL(fileURLWithPath: user.executable)
            child.arguments = user.arguments
            child.standardInput = FileHandle.nullDevice
            child.standardOutput = log
            child.standardError = log
            try Self.withSignalsUnblocked { try child.run() }
            process = child
        }
        do {
            let pid = try waitUntilReady(timeout: timeout, isReady: isReady)
            lock.withLock { watchdog = startWatchdog(pid: pid) }
        } catch {
            let log = self.log()
            signalAndWait(immediateStop)
            var failure = TestPostgresError("\(error)\n--- \(name) log \(logFile.path) ---\n\(log)")
            failure.portInUse = (error as? TestPostgresError)?.portInUse ?? false
            throw failure
        }
    }

    private func waitUntilReady(timeout: Duration, isReady: () throws -> Bool) throws -> pid_t {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            guard let child = lock.withLock({ process }), child.isRunning else {
                var error = TestPostgresError("\(name) exited during startup")
                error.portInUse = log().contains("Address already in use")
                throw error
            }
            if let pid = readPID(), try isReady() { return pid }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw TestPostgresError("\(name) did not accept connections on 127.0.0.1:\(port) within \(timeout)")
    }

    /// Runs `body` with no signal blocked in the calling thread, so a child spawned in it starts with none blocked.
    ///
    /// A child inherits the spawning thread's signal mask, and the threads that run tests (Dispatch and Swift
    /// concurrency workers) block nearly every signal. PostgreSQL sets its own mask, but PgBouncer and `sh` do not:
    /// spawned from such a thread they ignore SIGTERM and SIGINT for good, and only SIGKILL stops them.
    private static func withSignalsUnblocked<Result>(_ body: () throws -> Result) rethrows -> Result {
        var none = sigset_t()
        var previous = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        return try body()
    }

    /// The PID on the first line of the PID file, if there is one.
    private func readPID() -> pid_t? {
        guard let text = try? String(contentsOf: pidFile, encoding: .utf8) else { return nil }
        let first = text.split(separator: "\n", maxSplits: 1).first ?? ""
        guard let pid = pid_t(first.trimmingCharacters(in: .whitespaces)), pid > 0 else { return nil }
        return pid
    }

    /// The PID of the running server, or nil when it is stopped.
    var pid: pid_t? {
        lock.withLock {
            guard let process, process.isRunning else { return nil }
            return readPID()
        }
    }

    /// The log so far, for failure messages.
    func log() -> String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    // MARK: Stopping

    /// Sends `signal` and waits until the server has exited; throws, naming `action`, if it is not running or
    /// needed SIGKILL after 30 seconds.
    func stop(signal: Int32, as action: String) throws {
        guard lock.withLock({ process != nil }) else { throw TestPostgresError("\(action): \(name) is not running") }
        if !signalAndWait(signal, timeout: .seconds(30)) {
            throw TestPostgresError("\(action): \(name) needed SIGKILL after 30 seconds")
        }
    }

    /// Stops the server if it runs (``immediateStop``) and removes the temp dir. Idempotent.
    func cleanup() {
        lock.withLock { cleanedUp = true }
        signalAndWait(immediateStop)
        try? FileManager.default.removeItem(at: rootDir)
    }

    /// Sends `signal` to the server and waits for it to exit, escalating to SIGKILL after `timeout`; stops the
    /// watchdog. Returns false if SIGKILL was needed. Safe to call when nothing runs.
    @discardableResult
    private func signalAndWait(_ signal: Int32, timeout: Duration = .seconds(10)) -> Bool {
        lock.withLock {
            defer {
                process = nil
                if let watchdog, watchdog.isRunning { watchdog.terminate() }
                watchdog = nil
            }
            guard let process else { return true }
            let pid = readPID()
            if let pid { kill(pid, signal) } else { process.terminate() }
            if Self.waitForExit(process, pid: pid, timeout: timeout) { return true }
            if let pid { kill(pid, SIGKILL) }
            kill(process.processIdentifier, SIGKILL)
            _ = Self.waitForExit(process, pid: pid, timeout: .seconds(10))
            return false
        }
    }

    /// Waits until the child (`runuser` or the server itself) has exited and `pid` no longer exists.
    ///
    /// Foundation sees the child exit only when every holder of its exit-detection descriptor has closed it, which
    /// may include the server's own children; checking `pid` as well keeps this honest either way.
    private static func waitForExit(_ process: Process, pid: pid_t?, timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let pidGone = pid.map { kill($0, 0) != 0 && errno == ESRCH } ?? true
            if !process.isRunning && pidGone { return true }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return false
    }

    /// A shell process that stops the server and removes the temp dir if this test process dies first.
    ///
    /// Runs as the calling user (root in CI, so it may signal the `postgres` user's server). It exits by itself
    /// once the server is gone, and ``signalAndWait(_:timeout:)`` terminates it on a normal stop.
    private func startWatchdog(pid: pid_t) -> Process? {
        let script = """
            while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
            kill -0 "$2" 2>/dev/null || exit 0
            kill -"$4" "$2"
            i=0
            while kill -0 "$2" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
            kill -KILL "$2" 2>/dev/null
            rm -rf "$3"
            """
        let watchdog = Process()
        watchdog.executableURL = URL(fileURLWithPath: "/bin/sh")
        watchdog.arguments = [
            "-c", script, "pgconn-\(name)-watchdog", String(getpid()), String(pid), rootDir.path,
            String(immediateStop),
        ]
        watchdog.standardInput = FileHandle.nullDevice
        watchdog.standardOutput = FileHandle.nullDevice
        watchdog.standardError = FileHandle.nullDevice
        return (try? Self.withSignalsUnblocked { try watchdog.run() }).map { watchdog }
    }
}

/// A failure of the test server harness (PostgreSQL or PgBouncer), with the details (often the log) in its text.
struct TestPostgresError: Error, CustomStringConvertible {
    var description: String
    /// The server could not bind its port (picked free, then taken): ``ServerProcess/startOnFreePort`` retries.
    var portInUse = false

    init(_ description: String) { self.description = description }
}
