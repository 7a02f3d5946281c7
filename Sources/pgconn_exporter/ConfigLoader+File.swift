#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import PGConnCore

/// Reading the config file: the I/O the pure ``ConfigLoader`` leaves to the executable.
extension ConfigLoader {
    /// Loads a config from a file; a file that cannot be read gives one message naming it.
    static func load(
        file path: String, parseDSN: (String) -> Result<DSNSummary, DSNError>
    ) -> Result<ValidatedConfig, ConfigError> {
        load(read: readFile(path), path: path, parseDSN: parseDSN)
    }

    /// Loads a config from a file read already (the reloader hashes the same bytes to notice changes).
    static func load(
        read: Result<[UInt8], ReadProblem>, path: String, parseDSN: (String) -> Result<DSNSummary, DSNError>
    ) -> Result<ValidatedConfig, ConfigError> {
        let bytes: [UInt8]
        switch read {
        case .success(let contents): bytes = contents
        case .failure(let problem):
            return .failure(ConfigError(messages: ["cannot read config file \"\(path)\": \(problem.message)"]))
        }
        guard let yaml = String(validating: bytes, as: UTF8.self) else {
            return .failure(ConfigError(messages: ["cannot read config file \"\(path)\": not valid UTF-8"]))
        }
        return load(yaml: yaml, parseDSN: parseDSN)
    }

    /// Why a file could not be read, as `strerror` words it (`no such file or directory`).
    struct ReadProblem: Error {
        var message: String

        init(errno code: Int32) {
            message = String(cString: strerror(code)).lowercased()
        }
    }

    /// The whole file, read with plain POSIX calls so a failure has the system's exact reason.
    static func readFile(_ path: String) -> Result<[UInt8], ReadProblem> {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return .failure(ReadProblem(errno: errno)) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64 * 1024)
        while true {
            let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if count == 0 { return .success(bytes) }
            if count < 0 {
                if errno == EINTR { continue }
                return .failure(ReadProblem(errno: errno))
            }
            bytes += chunk[..<count]
        }
    }
}
