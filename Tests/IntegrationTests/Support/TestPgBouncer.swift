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
/// PgBouncer runs as a ``ServerProcess`` (through `runuser -u postgres --` when the tests run as root, since it
/// refuses root), which also owns the temp dir, the watchdog and the cleanup. It runs in the foreground (no `-d`);
/// its log (stdout and stderr) is `pgbouncer.log` in the temp dir. Failures are thrown as ``TestPostgresError``.
///
/// Methods block the calling thread while they wait for PgBouncer, which is what a test wants.
final class TestPgBouncer: TestServer, Sendable {
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
    private let bouncer: ServerProcess

    private init(port: Int, rootDir: URL) {
        self.port = port
        self.rootDir = rootDir
        self.logFile = rootDir.appendingPathComponent("pgbouncer.log")
        self.configFile = rootDir.appendingPathComponent("pgbouncer.ini")
        self.pidFile = rootDir.appendingPathComponent("pgbouncer.pid")
        // SIGTERM is PgBouncer's immediate shutdown.
        bouncer = ServerProcess(
            name: "pgbouncer", port: port, rootDir: rootDir, logFile: logFile, pidFile: pidFile,
            executable: Self.executable, arguments: [configFile.path], immediateStop: SIGTERM)
    }

    // MARK: Starting

    /// Writes a config for `server` in a fresh temp dir and starts PgBouncer on a free port; a port taken between
    /// picking and binding is retried with another port.
    static func start(in front: TestPostgres) throws -> TestPgBouncer {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw TestPostgresError("no \(executable) (run `make deps`: the Debian package pgbouncer)")
        }
        return try ServerProcess.startOnFreePort(tempDirPrefix: "pgconn-bouncer") { port, rootDir in
            let bouncer = TestPgBouncer(port: port, rootDir: rootDir)
            try bouncer.writeConfig(serverPort: front.port, password: front.superuserPassword)
            return bouncer
        }
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
        try ServerUser.handOver(rootDir)
    }

    private func write(_ text: String, to url: URL, mode: Int) throws {
        let attributes: [FileAttributeKey: Any] = [.posixPermissions: mode]
        guard FileManager.default.createFile(atPath: url.path, contents: Data(text.utf8), attributes: attributes) else {
            throw TestPostgresError("cannot write \(url.path)")
        }
        try ServerUser.handOver(url)
    }

    /// Starts PgBouncer (again, after ``stop(signal:)``) on the same port and waits until it accepts connections:
    /// `pgbouncer.pid` is written and `pg_isready` gets an answer from the port (an auth request counts). Throws
    /// with its log if it does not within ``startTimeout``.
    func start() throws {
        let isReady = try TestPostgres.findBinDir().appendingPathComponent("pg_isready").path
        let arguments = ["-q", "-h", "127.0.0.1", "-p", String(port), "-d", "pgbouncer", "-U", "postgres", "-t", "5"]
        try bouncer.start(timeout: Self.startTimeout) { try runCommand(isReady, arguments).status == 0 }
    }

    /// The PID of the running PgBouncer, or nil when it is stopped.
    var pid: pid_t? { bouncer.pid }

    // MARK: Stopping

    /// Stops PgBouncer and waits until it has exited. SIGTERM (the default) is its immediate shutdown: every
    /// client and server connection is closed at once, without a message. SIGINT is the safe shutdown, which
    /// first waits for server connections to be released.
    func stop(signal: Int32 = SIGTERM) throws {
        try bouncer.stop(signal: signal, as: "stop")
    }

    /// Stops PgBouncer if it runs (immediate shutdown) and removes the temp dir. Idempotent; also run when the last
    /// reference goes away.
    func cleanup() { bouncer.cleanup() }

    // MARK: Using it

    /// A libpq key=value connection string for 127.0.0.1 TCP on ``port`` as the `postgres` superuser:
    /// `database` `postgres` is the pooled server database, `pgbouncer` the admin console.
    func dsn(database: String = "postgres", password: String? = TestPostgres.superuserPassword) -> String {
        var parts = ["host=127.0.0.1", "port=\(port)", "user=postgres", "dbname=\(database)"]
        if let password { parts.append("password=\(password)") }
        return parts.joined(separator: " ")
    }

    /// The log so far, for failure messages.
    func log() -> String { bouncer.log() }

    /// The installed version, such as `1.18.0`, from the first line of `pgbouncer --version`.
    static func installedVersion() throws -> String {
        let result = try runCommand(executable, ["--version"])
        let first = result.stdout.split(separator: "\n").first.map(String.init) ?? ""
        guard result.status == 0, first.hasPrefix("PgBouncer ") else {
            throw TestPostgresError("unexpected `pgbouncer --version` output: \(result.stdout)\(result.stderr)")
        }
        return String(first.dropFirst("PgBouncer ".count))
    }
}
