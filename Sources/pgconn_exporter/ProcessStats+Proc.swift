import Foundation
import PGConnCore

#if canImport(Glibc)
    import Glibc
#endif

/// Reading `/proc` for the `process_*` metrics: the I/O the pure ``ProcessStats`` parsers leave to the executable.
extension ProcessStats {
    /// Reads the current process's stats from `/proc`; nil where there is no `/proc` (macOS) or a file is unreadable.
    static func readCurrent() -> ProcessStats? {
        #if os(Linux)
            guard let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
                let limits = try? String(contentsOfFile: "/proc/self/limits", encoding: .utf8),
                let procStat = try? String(contentsOfFile: "/proc/stat", encoding: .utf8),
                let bootTime = bootTime(procStat: procStat),
                let descriptors = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")
            else { return nil }
            return parse(
                stat: stat, limits: limits, openFDs: descriptors.count,
                clockTicksPerSecond: sysconf(Int32(_SC_CLK_TCK)), pageSize: sysconf(Int32(_SC_PAGESIZE)),
                bootTimeSeconds: bootTime)
        #else
            return nil
        #endif
    }
}
