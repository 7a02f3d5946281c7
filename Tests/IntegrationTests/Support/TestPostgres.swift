import Foundation

/// A throwaway PostgreSQL server for one test: its own temp dir, data dir, free port and socket dir.
///
/// The postmaster runs as a ``ServerProcess`` (as the `postgres` OS user when the tests run as root; never
/// `pg_ctl start`, whose daemonised postmaster inherits Foundation's exit-detection descriptor), which also owns
/// the temp dir, the watchdog and the cleanup. `initdb` and `psql` run as the same user through ``ServerUser``.
///
/// Authentication: `trust` on the unix socket, `scram-sha-256` on 127.0.0.1 TCP, where the superuser
/// `postgres` logs in with ``superuserPassword``. The server log is `server.log` in the temp dir.
///
/// Methods block the calling thread while they wait for the server, which is what a test wants.
final class TestPostgres: TestServer, Sendable {
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
    private let postmaster: ServerProcess

    private init(port: Int, rootDir: URL, binDir: URL) {
        self.port = port
        self.rootDir = rootDir
        self.socketDir = rootDir.appendingPathComponent("socket", isDirectory: true)
        self.dataDir = rootDir.appendingPathComponent("data", isDirectory: true)
        self.logFile = rootDir.appendingPathComponent("server.log")
        self.binDir = binDir
        postmaster = ServerProcess(
            name: "postgres", port: port, rootDir: rootDir, logFile: logFile,
            pidFile: dataDir.appendingPathComponent("postmaster.pid"),
            executable: binDir.appendingPathComponent("postgres").path,
            arguments: [
                "-D", dataDir.path, "-p", String(port), "-k", socketDir.path, "-c", "listen_addresses=127.0.0.1",
            ],
            immediateStop: SIGQUIT)
    }

    // MARK: Creating and starting

    /// Creates a cluster in a fresh temp dir, applies `settings` to `postgresql.conf` and starts it.
    ///
    /// Each setting is written as `key = 'value'` (quotes in the value are escaped), so pass plain values:
    /// `["idle_session_timeout": "1s", "max_connections": "5"]`. The port, socket dir and listen address are
    /// given on the command line and cannot be overridden. A port taken between picking and binding is
    /// retried with another port.
    static func start(settings: [String: String] = [:]) throws -> TestPostgres {
        let binDir = try findBinDir()
        return try ServerProcess.startOnFreePort(tempDirPrefix: "pgconn-pg") { port, rootDir in
            let server = TestPostgres(port: port, rootDir: rootDir, binDir: binDir)
            try server.initialize(settings: settings)
            return server
        }
    }

    private func initialize(settings: [String: String]) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: socketDir, withIntermediateDirectories: false)
        let passwordFile = rootDir.appendingPathComponent("superuser.password")
        guard fm.createFile(atPath: passwordFile.path, contents: Data((superuserPassword + "\n").utf8)) else {
            throw TestPostgresError("cannot write \(passwordFile.path)")
        }
        _ = fm.createFile(atPath: logFile.path, contents: nil)
        try ServerUser.handOver(rootDir)
        try ServerUser.handOver(socketDir)
        try ServerUser.handOver(passwordFile)

        let result = try ServerUser.run(
            binary("initdb"),
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
    ///
    /// Ready means `postmaster.pid` says `ready` (line 8: `starting`, `ready`, `stopping`) and `pg_isready`
    /// confirms over TCP.
    /// A hot standby of `primary`, made with `pg_basebackup -R` over the primary's unix socket (local
    /// replication is trusted), streaming from it, started on a free port.
    static func startStandby(of primary: TestPostgres) throws -> TestPostgres {
        let binDir = try findBinDir()
        return try ServerProcess.startOnFreePort(tempDirPrefix: "pgconn-standby") { port, rootDir in
            let server = TestPostgres(port: port, rootDir: rootDir, binDir: binDir)
            try server.copy(from: primary)
            return server
        }
    }

    private func copy(from primary: TestPostgres) throws {
        let fm = FileManager.default
        try fm.createDirectory(at: socketDir, withIntermediateDirectories: false)
        _ = fm.createFile(atPath: logFile.path, contents: nil)
        try ServerUser.handOver(rootDir)
        try ServerUser.handOver(socketDir)
        let result = try ServerUser.run(
            binary("pg_basebackup"),
            [
                "-h", primary.socketDir.path, "-p", String(primary.port), "-U", "postgres", "-D", dataDir.path, "-R",
                "-X", "stream", "--no-sync",
            ])
        guard result.status == 0 else {
            throw TestPostgresError("pg_basebackup failed (exit \(result.status)):\n\(result.stdout)\(result.stderr)")
        }
    }

    /// Ends recovery on a standby (`pg_promote()`, waiting until it is a primary).
    func promote() throws {
        let promoted = try psql("SELECT pg_promote(wait => true, wait_seconds => 30)")
        guard promoted == "t" else { throw TestPostgresError("pg_promote() returned \(promoted)") }
    }

    func start() throws {
        try postmaster.start(timeout: Self.startTimeout) {
            guard postmasterStatus() == "ready" else { return false }
            let check = try runCommand(
                binary("pg_isready"), ["-q", "-h", "127.0.0.1", "-p", String(port), "-U", "postgres", "-t", "5"])
            return check.status == 0
        }
    }

    /// Line 8 of `postmaster.pid`: `starting`, `ready` or `stopping`.
    private func postmasterStatus() -> String? {
        let file = dataDir.appendingPathComponent("postmaster.pid")
        guard let text = try? String(contentsOf: file, encoding: .utf8) else { return nil }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        return lines.count > 7 ? lines[7].trimmingCharacters(in: .whitespaces) : nil
    }

    /// The PID of the running postmaster, or nil when the server is stopped.
    var postmasterPID: pid_t? { postmaster.pid }

    // MARK: Stopping

    /// Stops the server like `pg_ctl stop -m immediate`: SIGQUIT to the postmaster, no checkpoint, and
    /// waits until the postmaster and every backend have exited. The next ``start()`` runs crash recovery.
    func stopImmediate() throws {
        try postmaster.stop(signal: SIGQUIT, as: "stop immediate")
    }

    /// Stops the server like `pg_ctl stop -m smart`: SIGTERM, new connections refused (57P03), and the server
    /// waits for every session to end on its own (30 s here, then SIGKILL and an error).
    func stopSmart() throws {
        try postmaster.stop(signal: SIGTERM, as: "stop smart")
    }

    /// Stops the server like `pg_ctl stop -m fast`: SIGINT, backends terminated with 57P01, a checkpoint.
    func stopFast() throws {
        try postmaster.stop(signal: SIGINT, as: "stop fast")
    }

    /// Stops the server if it runs (immediate shutdown) and removes the temp dir. Idempotent; also run when the
    /// last reference goes away.
    func cleanup() { postmaster.cleanup() }

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
        let result = try ServerUser.run(
            binary("psql"),
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
    func serverLog() -> String { postmaster.log() }

    // MARK: Ports and binaries

    /// A TCP port on 127.0.0.1 that was free a moment ago: binds port 0, reads the port, closes.
    static func freePort() -> Int {
        do {
            let (fd, port) = try SocketIO.bind(port: 0)
            close(fd)
            return port
        } catch {
            preconditionFailure("\(error)")  // Out of fds, or no loopback: no test can run.
        }
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
}
