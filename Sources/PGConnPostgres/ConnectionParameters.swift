import Glibc
import PGConnCore

/// The libpq keywords the exporter adds to a target's DSN on every connect.
///
/// The password is read before every (re)connect, on a worker thread (``readPassword(_:)``), so a rotated secret
/// is picked up without a reload and a slow file system never stalls the loop.
enum ConnectionParameters {
    /// What `pg_stat_activity.application_name` shows: sessions, login checks and probes apart, so a DBA can tell them
    /// from each other and from applications.
    enum Purpose: String {
        case session = "pgconn_exporter"
        case loginCheck = "pgconn_exporter_login"
        /// An on-demand probe (`/probe`): connect, query, close.
        case probe = "pgconn_exporter_probe"
    }

    /// Keywords that override the DSN.
    ///
    /// - Parameters:
    ///   - dsnValues: what the DSN and libpq's environment defaults set (``DSNParser/effectiveValues(of:)``).
    ///   - password: read by ``readPassword(_:)``, `nil` to let libpq decide (no password, or `.pgpass`).
    ///   - resolved: numeric addresses for the DSN's hosts (and the hosts and ports repeated to match when a name
    ///     has several), so libpq never resolves a name on the loop.
    ///   - serverTimeouts: send ``serverTimeouts(for:dsnOptions:)`` (false once a pooler refused them).
    static func overrides(
        for target: TargetConfig, purpose: Purpose, dsnValues: [String: String], password: String?,
        resolved: ResolvedHosts?,
        serverTimeouts: Bool = true
    ) -> [(String, String)] {
        var pairs: [(String, String)] = [
            ("application_name", purpose.rawValue),
            ("keepalives", "1"),
            ("keepalives_idle", wholeSeconds(target.keepalives.idle)),
            ("keepalives_interval", wholeSeconds(target.keepalives.interval)),
            ("keepalives_count", String(target.keepalives.count)),
            ("tcp_user_timeout", String(max(0, target.keepalives.userTimeout.nanoseconds / 1_000_000))),
        ]
        // GSSAPI encryption is tried first by default, and with a Kerberos ticket cache libpq may then talk to the
        // KDC synchronously, inside the connect: off unless the DSN or PGGSSENCMODE asks for it.
        if dsnValues["gssencmode"] == nil { pairs.append(("gssencmode", "disable")) }
        if purpose != .loginCheck, serverTimeouts,
            let options = self.serverTimeouts(for: target, dsnOptions: dsnValues["options"])
        {
            pairs.append(("options", options))
        }
        if let password { pairs.append(("password", password)) }
        if let resolved {
            pairs.append(("hostaddr", resolved.hostaddr))
            if let host = resolved.host { pairs.append(("host", host)) }
            if let port = resolved.port { pairs.append(("port", port)) }
        }
        return pairs
    }

    /// The session's startup `options` with `statement_timeout` and `lock_timeout` set to `probe_timeout`, so
    /// the server itself ends a probe that would outlive it (a lock wait, a slow query) even if the cancel
    /// request never arrives. A setting the user chose in the DSN's own `options` is kept; `nil` when both are.
    /// PgBouncer refuses the `options` startup parameter unless told to ignore it; the monitor then connects
    /// without it (``refusesOptions(_:)``) and relies on the cancel request alone.
    static func serverTimeouts(for target: TargetConfig, dsnOptions: String?) -> String? {
        let milliseconds = String(max(1, target.probeTimeout.nanoseconds / 1_000_000))
        var parts = dsnOptions.map { [$0] } ?? []
        for setting in ["statement_timeout", "lock_timeout"] where !(dsnOptions?.contains(setting) ?? false) {
            parts.append("-c \(setting)=\(milliseconds)")
        }
        let options = parts.joined(separator: " ")
        return options == dsnOptions ? nil : options
    }

    /// Whether a failed connect says the server (a pooler) does not take the `options` startup parameter.
    static func refusesOptions(_ failure: Failure) -> Bool {
        failure.message.contains("unsupported startup parameter: options")
    }

    /// Reads a password source; `nil` for none. Blocks on a file read, so it runs on a worker thread.
    ///
    /// A missing file or unset variable is ``FailureReason/passwordUnavailable`` with the path or name in the
    /// message: the server never saw an attempt, so it is not `auth`.
    static func readPassword(_ source: PasswordSource) -> Result<String?, Failure> {
        switch source {
        case .none:
            return .success(nil)
        case .environment(let name):
            guard let value = getenv(name) else {
                return .failure(Failure(reason: .passwordUnavailable, message: "password_env \(name) is not set"))
            }
            return .success(String(cString: value))
        case .file(let path):
            return readPasswordFile(path).map { $0 }
        }
    }

    /// Reads a password file: its first line, without the line break. Regular files of at most 64 KiB only: a
    /// FIFO or a device would block a worker for good, so it is opened without blocking and refused.
    static func readPasswordFile(_ path: String) -> Result<String, Failure> {
        func failed(_ why: String) -> Result<String, Failure> {
            .failure(Failure(reason: .passwordUnavailable, message: "cannot read password_file \(path): \(why)"))
        }
        let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
        guard fd >= 0 else { return failed(String(cString: strerror(errno))) }
        defer { Glibc.close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return failed(String(cString: strerror(errno))) }
        guard info.st_mode & S_IFMT == S_IFREG else { return failed("not a regular file") }
        var bytes = [UInt8](repeating: 0, count: 65536)
        let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count >= 0 else { return failed(String(cString: strerror(errno))) }
        let text = String(decoding: bytes[0..<count], as: UTF8.self)
        // "\r\n" is one Character in Swift, so split on any newline rather than on "\n".
        let firstLine = text.split(maxSplits: 1, omittingEmptySubsequences: false, whereSeparator: \.isNewline).first
        return .success(String(firstLine ?? ""))
    }

    /// libpq takes keepalive settings in whole seconds; round up so a sub-second setting still means something.
    private static func wholeSeconds(_ duration: Duration) -> String {
        let nanos = duration.nanoseconds
        return String(max(1, (nanos + 999_999_999) / 1_000_000_000))
    }
}
