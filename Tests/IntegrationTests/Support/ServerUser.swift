import Foundation

/// Runs server binaries as the `postgres` OS user when the tests run as root, and as the test user otherwise.
///
/// `initdb`, `postgres` and PgBouncer refuse to run as root, so as root (CI) each runs through
/// `runuser -u postgres --` and every file it needs is handed to the `postgres` user first. `runuser` forks:
/// the PID of the real server is in its PID file, not the child's `processIdentifier`.
enum ServerUser {
    static let isRoot = geteuid() == 0

    /// As root, gives `url` to the `postgres` OS user; otherwise a no-op.
    static func handOver(_ url: URL) throws {
        guard isRoot else { return }
        guard let user = getpwnam("postgres") else {
            throw TestPostgresError("running as root needs the `postgres` OS user (install postgresql)")
        }
        guard chown(url.path, user.pointee.pw_uid, user.pointee.pw_gid) == 0 else {
            throw TestPostgresError("chown postgres \(url.path): \(String(cString: strerror(errno)))")
        }
    }

    /// The command line that runs `executable` with `arguments` as the server user.
    static func command(
        _ executable: String, _ arguments: [String]
    ) throws -> (executable: String, arguments: [String]) {
        guard isRoot else { return (executable, arguments) }
        return (try runuserPath(), ["-u", "postgres", "--", executable] + arguments)
    }

    /// Runs `executable` to completion as the server user (see ``runCommand(_:_:stdin:environment:timeout:)``).
    static func run(
        _ executable: String, _ arguments: [String], stdin: String? = nil, timeout: Duration = .seconds(120)
    ) throws -> CommandResult {
        let command = try command(executable, arguments)
        return try runCommand(command.executable, command.arguments, stdin: stdin, timeout: timeout)
    }

    private static func runuserPath() throws -> String {
        for path in ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser"]
        where FileManager.default.isExecutableFile(atPath: path) {
            return path
        }
        throw TestPostgresError("running as root needs runuser (util-linux)")
    }
}
