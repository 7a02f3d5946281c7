import Foundation

/// A throwaway PostgreSQL server for one test: its own temp dir, data dir, free port and socket dir.
///
/// `initdb` and `postgres` refuse to run as root, so as root (CI) every server-side command runs through
/// `runuser -u postgres --` and the temp dir is handed to the `postgres` OS user; as any other user they run
/// directly. The postmaster runs as a foreground child (never `pg_ctl start`, whose daemonised postmaster
/// inherits Foundation's exit-detection descriptor); `runuser` forks, so signals go to the real postmaster
/// PID, read from the first line of `postmaster.pid`.
///
/// Authentication: `trust` on the unix socket, `scram-sha-256` on 127.0.0.1 TCP, where the superuser
/// `postgres` logs in with ``superuserPassword``. The server log is `server.log` in the temp dir.
///
/// Nothing is left behind: ``cleanup()`` runs from `deinit` too, and a watchdog shell process stops the
/// postmaster and removes the temp dir if the test process dies without cleaning up (a crash, a `fatalError`).
///
/// `@unchecked Sendable`: the mutable state (the server and watchdog processes, whether it was cleaned
/// up) is only touched under `lock`; every other stored property is immutable. Methods block the calling
/// thread while they wait for the server, which is what a test wants.
final class TestPostgres: @unchecked Sendable {
    /// The password of the `postgres` superuser for TCP logins.
    static let superuserPassword = "pgconn-test-superuser"
    /// How long ``start()`` waits for the server to accept connections.
    static let startTimeout: Duration = .seconds(60)

    var superuserPassword: String { Self.superuserPassword }
    /// The TCP port on 127.0.0.1 (also the unix socket's port number).
    let port: Int
    /// The temp dir holding everything: `data/`, `socket/`, `server.log`.
    let rootDir: URL
    /// The directory of the unix socket (`-k`), inside ``rootDir``.
    let socketDir: URL
    /// The data directory (`-D`), inside ``rootDir``.
    let dataDir: URL
    /// The server's stderr, appended across restarts.
    let logFile: URL

    private let binDir: URL
    private let lock = NSLock()
    private var server: Process?
    private var watchdog: Process?
    private var cleanedUp = false

    private init(port: Int, rootDir: URL, binDir: URL) {
        self.port = port
        self.rootDir = rootDir
        self.socketDir = rootDir.appendingPathComponent("socket", isDirectory: true)
        self.dataDir = rootDir.appendingPathComponent("data", isDirectory: true)
        self.logFile = rootDir.appendingPathComponent("server.log")
        self.binDir = binDir
    }

    deinit { cleanup() }

    // MARK: Creating and starting

    /// Creates a cluster in a fresh temp dir, applies `settings` to `postgresql.conf` and starts it.
    ///
    /// Each setting is written as `key = 'value'` (quotes in the value are escaped), so pass plain values:
    /// `["idle_session_timeout": "1s", "max_connections": "5"]`. The port, socket dir and listen address are
    /// given on the command line and cannot be overridden. A port taken between picking and binding is
    /// retried with another port.
    static func start(settings: [String: String] = [:]) throws -> TestPostgres {
        var lastError: (any Error)?
        for _ in 0..<3 {
            let server = try create(settings: settings)
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
        throw lastError ?? TestPostgresError("could not start PostgreSQL")
    }

    private static func create(settings: [String: String]) throws -> TestPostgres {
        let binDir = try findBinDir()
        let template = FileManager.default.temporaryDirectory.appendingPathComponent("pgconn-pg-XXXXXX").path
        var buffer = Array(template.utf8CString)
        guard let made = mkdtemp(&buffer) else {
            throw TestPostgresError("mkdtemp \(template) failed: \(String(cString: strerror(errno)))")
        }
        let rootDir = URL(fileURLWithPath: String(cString: made), isDirectory: true)
        let server = TestPostgres(port: freePort(), rootDir: rootDir, binDir: binDir)
        do {
            try server.initialize(settings: settings)
        } catch {
            server.cleanup()
            throw error
        }
        return server
    }

    private func initialize(settings: [String: String]) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: socketDir, withIntermediateDirectories: false)
        let passwordFile = rootDir.appendingPathComponent("superuser.password")
        guard fm.createFile(atPath: passwordFile.path, contents: Data((superuserPassword + "\n").utf8)) else {
            throw TestPostgresError("cannot write \(passwordFile.path)")
        }
        _ = fm.createFile(atPath: logFile.path, contents: nil)
        try handToServerUser(rootDir)
        try handToServerUser(socketDir)
        try handToServerUser(passwordFile)

        let result = try runAsServerUser(
            binDir.appendingPathComponent("initdb").path,
            [
                "-D", dataDir.path, "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
                "--pwfile=\(passwordFile.path)", "-E", "UTF8", "--locale=C", "--no-sync",
            ])
        try? fm.removeItem(at: passwordFile)
        guard result.status == 0 else {
            throw TestPostgresError("initdb failed (exit \(result.status)):\n\(result.stdout)\(result.stderr)")
        }

        // fsync off: fast, and safe as long as the OS survives (an immediate stop keeps every commit).
        // Not synchronous_commit off: an immediate stop would lose the last commits.
        var conf = "\n# Added by TestPostgres.\nfsync = off\n"
        conf += "log_line_prefix = '%m [%p] '\n"
        for (key, value) in settings.sorted(by: { $0.key < $1.key }) {
            conf += "\(key) = '\(value.replacingOccurrences(of: "'", with: "''"))'\n"
        }
        let confFile = dataDir.appendingPathComponent("postgresql.conf")
        let handle = try FileHandle(forWritingTo: confFile)
        defer { try? handle.close() }
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(conf.utf8))
    }

    /// Starts the server on the same data dir and port (after ``stopImmediate()`` or ``stopFast()``) and
    /// waits until it accepts TCP connections; throws with the server log if it does not within
    /// ``startTimeout``.
    func start() throws {
        try lock.withLock {
            guard !cleanedUp else { throw TestPostgresError("start() after cleanup()") }
            guard server == nil else { throw TestPostgresError("start(): the server is already running") }
            let log = try FileHandle(forWritingTo: logFile)
            defer { try? log.close() }
            try log.seekToEnd()
            let process = try makeServerUserProcess(
                binDir.appendingPathComponent("postgres").path,
                [
                    "-D", dataDir.path, "-p", String(port), "-k", socketDir.path,
                    "-c", "listen_addresses=127.0.0.1",
                ])
            process.standardInput = FileHandle.nullDevice
            process.standardOutput = log
            process.standardError = log
            try process.run()
            server = process
        }
        do {
            let pid = try waitUntilReady()
            lock.withLock { watchdog = startWatchdog(postmasterPID: pid) }
        } catch {
            let log = (try? String(contentsOf: logFile, encoding: .utf8)) ?? "(no log)"
            killServer(signal: SIGQUIT)
            var failure = TestPostgresError("\(error)\n--- server log \(logFile.path) ---\n\(log)")
            failure.portInUse = (error as? TestPostgresError)?.portInUse ?? false
            throw failure
        }
    }

    /// Polls `postmaster.pid` until the postmaster reports `ready`, then confirms with `pg_isready` over TCP.
    private func waitUntilReady() throws -> pid_t {
        let deadline = ContinuousClock.now + Self.startTimeout
        while ContinuousClock.now < deadline {
            guard let process = lock.withLock({ server }), process.isRunning else {
                let log = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
                var error = TestPostgresError("postgres exited during startup")
                error.portInUse = log.contains("Address already in use")
                throw error
            }
            if let (pid, status) = readPostmasterPID(), status == "ready" {
                let check = try runCommand(
                    binDir.appendingPathComponent("pg_isready").path,
                    ["-q", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-t", "5"])
                if check.status == 0 { return pid }
            }
            Thread.sleep(forTimeInterval: 0.02)
        }
        throw TestPostgresError("postgres did not accept connections on 127.0.0.1:\(port) within \(Self.startTimeout)")
    }

    /// The postmaster PID (line 1) and status (line 8: `starting`, `ready`, `stopping`) of `postmaster.pid`.
    private func readPostmasterPID() -> (pid_t, String)? {
        let file = dataDir.appendingPathComponent("postmaster.pid")
        guard let text = try? String(contentsOf: file, encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        guard let first = lines.first, let pid = pid_t(first.trimmingCharacters(in: .whitespaces)), pid > 0 else {
            return nil
        }
        let status = lines.count > 7 ? lines[7].trimmingCharacters(in: .whitespaces) : ""
        return (pid, status)
    }

    /// The PID of the running postmaster, or nil when the server is stopped.
    var postmasterPID: pid_t? {
        lock.withLock {
            guard let server, server.isRunning else { return nil }
            return readPostmasterPID()?.0
        }
    }

    // MARK: Stopping

    /// Stops the server like `pg_ctl stop -m immediate`: SIGQUIT to the postmaster, no checkpoint, and
    /// waits until the postmaster and every backend have exited. The next ``start()`` runs crash recovery.
    func stopImmediate() throws {
        try stop(signal: SIGQUIT, mode: "immediate")
    }

    /// Stops the server like `pg_ctl stop -m fast`: SIGINT, backends terminated with 57P01, a checkpoint.
    func stopFast() throws {
        try stop(signal: SIGINT, mode: "fast")
    }

    private func stop(signal: Int32, mode: String) throws {
        guard lock.withLock({ server != nil }) else { throw TestPostgresError("stop \(mode): not running") }
        if !killServer(signal: signal, timeout: .seconds(30)) {
            throw TestPostgresError("stop \(mode): postgres needed SIGKILL after 30 seconds")
        }
    }

    /// Sends `signal` to the postmaster and waits for the server process tree to exit, escalating to
    /// SIGKILL after `timeout`. Returns false if SIGKILL was needed. Safe to call when nothing runs.
    @discardableResult
    private func killServer(signal: Int32, timeout: Duration = .seconds(10)) -> Bool {
        lock.withLock {
            defer {
                server = nil
                if let watchdog, watchdog.isRunning { watchdog.terminate() }
                watchdog = nil
            }
            guard let server else { return true }
            let pid = readPostmasterPID()?.0
            if let pid { kill(pid, signal) } else { server.terminate() }
            if waitForExit(server, pid: pid, timeout: timeout) { return true }
            if let pid { kill(pid, SIGKILL) }
            kill(server.processIdentifier, SIGKILL)
            _ = waitForExit(server, pid: pid, timeout: .seconds(10))
            return false
        }
    }

    /// Waits until `runuser` (or the postmaster itself) has exited and `pid` no longer exists.
    ///
    /// Foundation sees the child exit only when every holder of its exit-detection descriptor has closed it,
    /// which includes the postmaster and its backends; checking `pid` as well keeps this honest either way.
    private func waitForExit(_ process: Process, pid: pid_t?, timeout: Duration) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let pidGone = pid.map { kill($0, 0) != 0 && errno == ESRCH } ?? true
            if !process.isRunning && pidGone { return true }
            Thread.sleep(forTimeInterval: 0.01)
        }
        return false
    }

    /// Stops the server if it runs (immediate shutdown) and removes the temp dir. Idempotent.
    func cleanup() {
        lock.withLock { cleanedUp = true }
        killServer(signal: SIGQUIT)
        try? FileManager.default.removeItem(at: rootDir)
    }

    /// A shell process that stops the postmaster and removes the temp dir if this test process dies first.
    ///
    /// Runs as the calling user (root in CI, so it may signal the `postgres` user's postmaster). It exits by
    /// itself once the postmaster is gone, and ``killServer(signal:timeout:)`` terminates it on a normal stop.
    private func startWatchdog(postmasterPID: pid_t) -> Process? {
        let script = """
            while kill -0 "$1" 2>/dev/null && kill -0 "$2" 2>/dev/null; do sleep 1; done
            kill -0 "$2" 2>/dev/null || exit 0
            kill -QUIT "$2"
            i=0
            while kill -0 "$2" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
            kill -KILL "$2" 2>/dev/null
            rm -rf "$3"
            """
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = [
            "-c", script, "pgconn-test-watchdog", String(getpid()), String(postmasterPID), rootDir.path,
        ]
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do {
            try process.run()
            return process
        } catch {
            return nil
        }
    }

    // MARK: Using the server

    /// A libpq key=value connection string for 127.0.0.1 TCP on ``port``.
    func dsn(user: String = "postgres", password: String? = nil, database: String = "postgres") -> String {
        var parts = [
            "host=127.0.0.1", "port=\(port)", "user=\(Self.quoteConnValue(user))",
            "dbname=\(Self.quoteConnValue(database))",
        ]
        if let password { parts.append("password=\(Self.quoteConnValue(password))") }
        return parts.joined(separator: " ")
    }

    /// Quotes a key=value connection string value when it is empty or has spaces, quotes or backslashes.
    private static func quoteConnValue(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.contains { $0 == " " || $0 == "'" || $0 == "\\" }
        guard needsQuotes else { return value }
        let escaped = value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'")
        return "'\(escaped)'"
    }

    /// Runs `sql` with psql as the `postgres` superuser over the unix socket and returns its trimmed output.
    ///
    /// `-X -A -t -v ON_ERROR_STOP=1`: unaligned tuples only, one row a line, `|` between columns. The SQL is
    /// read from stdin, so several statements run one after the other (each in its own transaction, and
    /// `CREATE DATABASE` works). Throws with psql's stderr on any error.
    @discardableResult
    func psql(_ sql: String, database: String = "postgres", timeout: Duration = .seconds(60)) throws -> String {
        let result = try runAsServerUser(
            binDir.appendingPathComponent("psql").path,
            [
                "-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1", "-h", socketDir.path, "-p", String(port),
                "-U", "postgres", "-d", database,
            ],
            stdin: sql, timeout: timeout)
        guard result.status == 0 else {
            throw TestPostgresError("psql failed (exit \(result.status)): \(result.stderr)")
        }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// The path of a client binary of this PostgreSQL installation (`psql`, `pg_isready`, `pgbench`, ...).
    func binary(_ name: String) -> String { binDir.appendingPathComponent(name).path }

    /// The server log so far, for failure messages.
    func serverLog() -> String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    // MARK: Ports, users and binaries

    /// A TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads the port, closes.
    static func freePort() -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue | SOCK_CLOEXEC.rawValue), 0)
        precondition(fd >= 0, "socket() failed: \(String(cString: strerror(errno)))")  // Out of fds: nothing works.
        defer { close(fd) }
        var address = sockaddr_in.loopback(port: 0)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        precondition(bound == 0, "bind(127.0.0.1:0) failed: \(String(cString: strerror(errno)))")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The newest `/usr/lib/postgresql/<major>/bin`, or `$PGCONN_PG_BIN` when set.
    static func findBinDir() throws -> URL {
        if let override = ProcessInfo.processInfo.environment["PGCONN_PG_BIN"], !override.isEmpty {
            return URL(fileURLWithPath: override, isDirectory: true)
        }
        let base = "/usr/lib/postgresql"
        let majors = ((try? FileManager.default.contentsOfDirectory(atPath: base)) ?? [])
            .compactMap(Int.init)
            .filter { FileManager.default.isExecutableFile(atPath: "\(base)/\($0)/bin/postgres") }
            .sorted()
        guard let newest = majors.last else {
            throw TestPostgresError("no PostgreSQL server under \(base)/*/bin (run `make deps`)")
        }
        return URL(fileURLWithPath: "\(base)/\(newest)/bin", isDirectory: true)
    }

    private static let isRoot = geteuid() == 0

    /// As root, gives `url` to the `postgres` OS user (initdb and postgres refuse root); otherwise a no-op.
    private func handToServerUser(_ url: URL) throws {
        guard Self.isRoot else { return }
        guard let user = getpwnam("postgres") else {
            throw TestPostgresError("running as root needs the `postgres` OS user (install postgresql)")
        }
        guard chown(url.path, user.pointee.pw_uid, user.pointee.pw_gid) == 0 else {
            throw TestPostgresError("chown postgres \(url.path): \(String(cString: strerror(errno)))")
        }
    }

    private func makeServerUserProcess(_ executable: String, _ arguments: [String]) throws -> Process {
        let process = Process()
        if Self.isRoot {
            process.executableURL = URL(fileURLWithPath: try Self.runuserPath())
            process.arguments = ["-u", "postgres", "--", executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        return process
    }

    private func runAsServerUser(
        _ executable: String, _ arguments: [String], stdin: String? = nil, timeout: Duration = .seconds(120)
    ) throws -> CommandResult {
        if Self.isRoot {
            return try runCommand(
                Self.runuserPath(), ["-u", "postgres", "--", executable] + arguments, stdin: stdin, timeout: timeout)
        }
        return try runCommand(executable, arguments, stdin: stdin, timeout: timeout)
    }

    private static func runuserPath() throws -> String {
        for path in ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        throw TestPostgresError("running as root needs runuser (util-linux)")
    }
}

/// A failure of the test PostgreSQL harness, with the details (and often the server log) in its text.
struct TestPostgresError: Error, CustomStringConvertible {
    var description: String
    /// The postmaster could not bind its port (picked free, then taken): ``TestPostgres/start(settings:)`` retries.
    var portInUse = false

    init(_ description: String) { self.description = description }
}

extension sockaddr_in {
    /// 127.0.0.1:`port` (host byte order in, network byte order stored).
    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }
}
