import Foundation

/// A throwaway PgBouncer for one test, in front of a ``TestPostgres``: its own temp dir, config and free port.
///
/// The one pooled database is `postgres` (`host=127.0.0.1 port=<server port> dbname=postgres`), in `transaction`
/// pool mode, so a client's session keeps its client connection while server connections come and go between
/// transactions. The admin console is the database `pgbouncer` (`admin_users = postgres`); it answers `SHOW ...`
/// and a few commands, nothing else.
///
/// Authentication: `scram-sha-256` against `userlist.txt`, which holds the `postgres` superuser's plain
/// password (``TestPostgres/superuserPassword``). A plain password lets PgBouncer both verify the client's SCRAM
/// exchange and log in to the server with SCRAM itself; a SCRAM secret would only work for pass-through.
///
/// PgBouncer refuses to run as root, so as root it runs through `runuser -u postgres --` with the temp dir
/// handed to the `postgres` OS user. It runs as a foreground child (no `-d`); because `runuser` forks, signals go
/// to the real PID, read from `pgbouncer.pid`. Its log (stdout and stderr) is `pgbouncer.log` in the temp dir.
/// Failures are thrown as ``TestPostgresError`` (with the log), whose `portInUse` drives the port retry.
/// Nothing is left behind: ``cleanup()`` runs from `deinit` too, and a watchdog shell process kills PgBouncer and
/// removes the temp dir if the test process dies without cleaning up.
///
/// `@unchecked Sendable`: the mutable state (the PgBouncer and watchdog processes, whether it was cleaned up)
/// is only touched under `lock`; every other stored property is immutable. Methods block the calling thread
/// while they wait for PgBouncer, which is what a test wants.
final class TestPgBouncer: @unchecked Sendable {
    /// How long ``start(in:)`` waits for PgBouncer to accept connections.
    static let startTimeout: Duration = .seconds(30)
    static let executable = "/usr/sbin/pgbouncer"

    /// The TCP port on 127.0.0.1.
    let port: Int
    /// The temp dir holding `pgbouncer.ini`, `userlist.txt`, `pgbouncer.pid` and `pgbouncer.log`.
    let rootDir: URL
    let logFile: URL
    private let configFile: URL
    private let pidFile: URL

    private let lock = NSLock()
    private var process: Process?
    private var watchdog: Process?
    private var cleanedUp = false

    private init(port: Int, rootDir: URL) {
        self.port = port
        self.rootDir = rootDir
        self.logFile = rootDir.appendingPathComponent("pgbouncer.log")
        self.configFile = rootDir.appendingPathComponent("pgbouncer.ini")
        self.pidFile = rootDir.appendingPathComponent("pgbouncer.pid")
    }

    deinit { cleanup() }

    // MARK: Starting

    /// Writes a config for `server` in a fresh temp dir and starts PgBouncer on a free port; a port taken between
    /// picking and binding is retried with another port.
    static func start(in front: TestPostgres) throws -> TestPgBouncer {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw TestPostgresError("no \(executable) (run `make deps`: the Debian package pgbouncer)")
        }
        var lastError: (any Error)?
        for _ in 0..<3 {
            let bouncer = try create(server: front)
            do {
                try bouncer.start()
                return bouncer
            } catch let error as TestPostgresError where error.portInUse {
                bouncer.cleanup()
                lastError = error
            } catch {
                bouncer.cleanup()
                throw error
            }
        }
        throw lastError ?? TestPostgresError("could not start PgBouncer")
    }

    private static func create(server: TestPostgres) throws -> TestPgBouncer {
        let template = FileManager.default.temporaryDirectory.appendingPathComponent("pgconn-bouncer-XXXXXX").path
        var buffer = Array(template.utf8CString)
        guard let made = mkdtemp(&buffer) else {
            throw TestPostgresError("mkdtemp \(template) failed: \(String(cString: strerror(errno)))")
        }
        let bouncer = TestPgBouncer(
            port: TestPostgres.freePort(), rootDir: URL(fileURLWithPath: String(cString: made), isDirectory: true))
        do {
            try bouncer.writeConfig(serverPort: server.port, password: server.superuserPassword)
        } catch {
            bouncer.cleanup()
            throw error
        }
        return bouncer
    }

    private func writeConfig(serverPort: Int, password: String) throws {
        let userList = rootDir.appendingPathComponent("userlist.txt")
        let config = """
            [databases]
            postgres = host=127.0.0.1 port=\(serverPort) dbname=postgres

            [pgbouncer]
            listen_addr = 127.0.0.1
            listen_port = \(port)
            unix_socket_dir =
            auth_type = scram-sha-256
            auth_file = \(userList.path)
            admin_users = postgres
            pool_mode = transaction
            pidfile = \(pidFile.path)
            logfile =

            """
        // userlist.txt: `"user" "password"`, a double quote inside a value doubled.
        let quoted = password.replacingOccurrences(of: "\"", with: "\"\"")
        try write("\"postgres\" \"\(quoted)\"\n", to: userList, mode: 0o600)
        try write(config, to: configFile, mode: 0o644)
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        try handToServerUser(rootDir)
    }

    private func write(_ text: String, to url: URL, mode: Int) throws {
        let attributes: [FileAttributeKey: Any] = [.posixPermissions: mode]
        guard FileManager.default.createFile(atPath: url.path, contents: Data(text.utf8), attributes: attributes) else {
            throw TestPostgresError("cannot write \(url.path)")
        }
        try handToServerUser(url)
    }

    /// Starts PgBouncer (again, after ``stop()``) on the same port and waits until it accepts connections;
    /// throws with its log if it does not within ``startTimeout``.
    func start() throws {
        try lock.withLock {
            guard !cleanedUp else { throw TestPostgresError("start() after cleanup()") }
            guard process == nil else { throw TestPostgresError("start(): PgBouncer is already running") }
            let log = try FileHandle(forWritingTo: logFile)
            defer { try? log.close() }
            try log.seekToEnd()
            let child = Process()
            if geteuid() == 0 {
                child.executableURL = URL(fileURLWithPath: try Self.runuserPath())
                child.arguments = ["-u", "postgres", "--", Self.executable, configFile.path]
            } else {
                child.executableURL = URL(fileURLWithPath: Self.executable)
                child.arguments = [configFile.path]
            }
            child.standardInput = FileHandle.nullDevice
            child.standardOutput = log
            child.standardError = log
            try Self.withSignalsUnblocked { try child.run() }
            process = child
        }
        do {
            let pid = try waitUntilReady()
            lock.withLock { watchdog = startWatchdog(pid: pid) }
        } catch {
            let log = self.log()
            stopProcess(signal: SIGKILL)
            var failure = TestPostgresError("\(error)\n--- pgbouncer log \(logFile.path) ---\n\(log)")
            failure.portInUse = (error as? TestPostgresError)?.portInUse ?? false
            throw failure
        }
    }

    /// Waits for `pgbouncer.pid`, then until `pg_isready` gets an answer from the port (an auth request counts).
    private func waitUntilReady() throws -> pid_t {
        let isReady = try TestPostgres.findBinDir().appendingPathComponent("pg_isready").path
        let deadline = ContinuousClock.now + Self.startTimeout
        while ContinuousClock.now < deadline {
            guard let child = lock.withLock({ process }), child.isRunning else {
                var error = TestPostgresError("pgbouncer exited during startup")
                error.portInUse = log().contains("Address already in use")
                throw error
            }
            if let pid = readPID() {
                let arguments = [
                    "-q", "-h", "127.0.0.1", "-p", String(port), "-d", "pgbouncer", "-U", "postgres", "-t", "5",
                ]
                let check = try runCommand(isReady, arguments)
                if check.status == 0 { return pid }
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw TestPostgresError("pgbouncer did not accept connections on 127.0.0.1:\(port) within \(Self.startTimeout)")
    }

    /// Runs `body` with no signal blocked in the calling thread, so a child spawned in it starts with none blocked.
    ///
    /// A child inherits the spawning thread's signal mask, and the threads that run tests (Dispatch and Swift
    /// concurrency workers) block nearly every signal. PostgreSQL sets its own mask, but PgBouncer does not: spawned
    /// from such a thread it ignores SIGTERM and SIGINT for good, and only SIGKILL stops it.
    private static func withSignalsUnblocked<Result>(_ body: () throws -> Result) rethrows -> Result {
        var none = sigset_t()
        var previous = sigset_t()
        sigemptyset(&none)
        pthread_sigmask(SIG_SETMASK, &none, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        return try body()
    }

    private func readPID() -> pid_t? {
        guard let text = try? String(contentsOf: pidFile, encoding: .utf8) else { return nil }
        guard let pid = pid_t(text.trimmingCharacters(in: .whitespacesAndNewlines)), pid > 0 else { return nil }
        return pid
    }

    /// The PID of the running PgBouncer, or nil when it is stopped.
    var pid: pid_t? {
        lock.withLock {
            guard let process, process.isRunning else { return nil }
            return readPID()
        }
    }

    // MARK: Stopping

    /// Stops PgBouncer and waits until it has exited. SIGTERM (the default) is its immediate shutdown: every
    /// client and server connection is closed at once, without a message. SIGINT is the safe shutdown, which
    /// first waits for server connections to be released.
    func stop(signal: Int32 = SIGTERM) throws {
        guard lock.withLock({ process != nil }) else { throw TestPostgresError("stop: PgBouncer is not running") }
        if !stopProcess(signal: signal, timeout: .seconds(30)) {
            throw TestPostgresError("stop: PgBouncer needed SIGKILL after 30 seconds")
        }
    }

    /// Sends `signal` to PgBouncer and waits for it to exit, escalating to SIGKILL after `timeout`. Returns
    /// false if SIGKILL was needed. Safe to call when nothing runs.
    @discardableResult
    private func stopProcess(signal: Int32, timeout: Duration = .seconds(10)) -> Bool {
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

    private static func waitForExit(_ process: Process, pid: pid_t?, timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let pidGone = pid.map { kill($0, 0) != 0 && errno == ESRCH } ?? true
            if !process.isRunning && pidGone { return true }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return false
    }

    /// Stops PgBouncer if it runs (immediate shutdown) and removes the temp dir. Idempotent.
    func cleanup() {
        lock.withLock { cleanedUp = true }
        stopProcess(signal: SIGTERM)
        try? FileManager.default.removeItem(at: rootDir)
    }

    /// A shell process that kills PgBouncer and removes the temp dir if this test process dies first; it exits by
    /// itself once PgBouncer is gone, and ``stopProcess(signal:timeout:)`` terminates it on a normal stop.
    private func startWatchdog(pid: pid_t) -> Process? {
        let script = """
            while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
            kill -0 "$2" 2>/dev/null || exit 0
            kill -KILL "$2"
            rm -rf "$3"
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script, "pgconn-bouncer-watchdog", String(getpid()), String(pid), rootDir.path]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        return (try? process.run()).map { process }
    }

    // MARK: Using it

    /// A libpq key=value connection string for 127.0.0.1 TCP on ``port`` as the `postgres` superuser:
    /// `database` `postgres` is the pooled server database, `pgbouncer` the admin console.
    func dsn(database: String = "postgres", password: String? = TestPostgres.superuserPassword) -> String {
        var parts = ["host=127.0.0.1", "port=\(port)", "user=postgres", "dbname=\(database)"]
        if let password { parts.append("password=\(password)") }
        return parts.joined(separator: " ")
    }

    /// The log so far, for failure messages.
    func log() -> String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// The installed version, such as `1.18.0`, from the first line of `pgbouncer --version`.
    static func installedVersion() throws -> String {
        let result = try runCommand(executable, ["--version"])
        let first = result.stdout.split(separator: "\n").first.map(String.init) ?? ""
        guard result.status == 0, first.hasPrefix("PgBouncer ") else {
            throw TestPostgresError("unexpected `pgbouncer --version` output: \(result.stdout)\(result.stderr)")
        }
        return String(first.dropFirst("PgBouncer ".count))
    }

    // MARK: The server user

    /// As root, gives `url` to the `postgres` OS user (PgBouncer refuses root); otherwise a no-op.
    private func handToServerUser(_ url: URL) throws {
        guard geteuid() == 0 else { return }
        guard let user = getpwnam("postgres") else {
            throw TestPostgresError("running as root needs the `postgres` OS user (install postgresql)")
        }
        guard chown(url.path, user.pointee.pw_uid, user.pointee.pw_gid) == 0 else {
            throw TestPostgresError("chown postgres \(url.path): \(String(cString: strerror(errno)))")
        }
    }

    private static func runuserPath() throws -> String {
        for path in ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        throw TestPostgresError("running as root needs runuser (util-linux)")
    }
}
