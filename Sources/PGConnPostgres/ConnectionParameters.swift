import Glibc
public import PGConnCore

/// The libpq keywords the exporter adds to a target's DSN on every connect.
///
/// The password is read here, on every (re)connect, so a rotated secret is picked up without a reload.
enum ConnectionParameters {
    /// What `pg_stat_activity.application_name` shows: sessions and login checks apart, so a DBA can tell them
    /// from each other and from applications.
    enum Purpose: String {
        case session = "pgconn_exporter"
        case loginCheck = "pgconn_exporter_login"
    }

    /// Keywords that override the DSN, or the failure to read the password.
    static func overrides(for target: TargetConfig, purpose: Purpose) -> Result<[(String, String)], Failure> {
        var pairs: [(String, String)] = [
            ("application_name", purpose.rawValue),
            ("keepalives", "1"),
            ("keepalives_idle", wholeSeconds(target.keepalives.idle)),
            ("keepalives_interval", wholeSeconds(target.keepalives.interval)),
            ("keepalives_count", String(target.keepalives.count)),
            ("tcp_user_timeout", String(max(0, target.keepalives.userTimeout.nanoseconds / 1_000_000))),
        ]
        switch target.password {
        case .none:
            break
        case .environment(let name):
            guard let value = getenv(name) else {
                return .failure(Failure(reason: .passwordUnavailable, message: "password_env \(name) is not set"))
            }
            pairs.append(("password", String(cString: value)))
        case .file(let path):
            switch readPasswordFile(path) {
            case .success(let password): pairs.append(("password", password))
            case .failure(let failure): return .failure(failure)
            }
        }
        return .success(pairs)
    }

    /// Reads a password file: its first line, without the line break. Small files only (64 KiB).
    static func readPasswordFile(_ path: String) -> Result<String, Failure> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else {
            let reason = String(cString: strerror(errno))
            return .failure(
                Failure(reason: .passwordUnavailable, message: "cannot read password_file \(path): \(reason)"))
        }
        defer { Glibc.close(fd) }
        var bytes = [UInt8](repeating: 0, count: 65536)
        let count = bytes.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        guard count >= 0 else {
            let reason = String(cString: strerror(errno))
            return .failure(
                Failure(reason: .passwordUnavailable, message: "cannot read password_file \(path): \(reason)"))
        }
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
