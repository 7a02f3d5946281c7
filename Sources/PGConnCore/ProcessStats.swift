/// The exporter's own resource usage, for the standard `process_*` metrics.
///
/// Same sources and semantics as the Go client's process collector: CPU (user + system), resident and
/// virtual memory, start time from `/proc/self/stat`; the soft `Max open files` from `/proc/self/limits`;
/// open descriptors counted in `/proc/self/fd` (the directory handle used to count them included, as in Go);
/// boot time from `btime` in `/proc/stat`. These parsers are pure: the executable reads the files
/// (`ProcessStats+Proc.swift` in pgconn_exporter) and passes their text.
public struct ProcessStats: Sendable, Equatable {
    /// User plus system CPU time, in seconds (`process_cpu_seconds_total`).
    public var cpuSecondsTotal: Double
    /// Resident set size in bytes: `rss` pages times the page size (`process_resident_memory_bytes`).
    public var residentMemoryBytes: Double
    /// Virtual memory size in bytes, `vsize` (`process_virtual_memory_bytes`).
    public var virtualMemoryBytes: Double
    /// Open file descriptors (`process_open_fds`).
    public var openFDs: Int
    /// The soft limit on open file descriptors; `Int.max` when unlimited (`process_max_fds`).
    public var maxFDs: Int
    /// When the process started, in seconds since the Unix epoch (`process_start_time_seconds`).
    public var startTimeSeconds: Double

    public init(
        cpuSecondsTotal: Double, residentMemoryBytes: Double, virtualMemoryBytes: Double, openFDs: Int,
        maxFDs: Int, startTimeSeconds: Double
    ) {
        self.cpuSecondsTotal = cpuSecondsTotal
        self.residentMemoryBytes = residentMemoryBytes
        self.virtualMemoryBytes = virtualMemoryBytes
        self.openFDs = openFDs
        self.maxFDs = maxFDs
        self.startTimeSeconds = startTimeSeconds
    }

    /// Builds the stats from the contents of `/proc/self/stat` and `/proc/self/limits`; nil if either is malformed.
    ///
    /// `clockTicksPerSecond` is `sysconf(_SC_CLK_TCK)` (the unit of `utime`, `stime` and `starttime`),
    /// `pageSize` is `sysconf(_SC_PAGESIZE)` (the unit of `rss`), `bootTimeSeconds` is from ``bootTime(procStat:)``.
    public static func parse(
        stat: String, limits: String, openFDs: Int, clockTicksPerSecond: Int, pageSize: Int, bootTimeSeconds: Double
    ) -> ProcessStats? {
        guard clockTicksPerSecond > 0, pageSize > 0, let fields = StatFields(stat),
            let maxFDs = maxOpenFiles(limits: limits)
        else { return nil }
        let ticks = Double(clockTicksPerSecond)
        return ProcessStats(
            cpuSecondsTotal: Double(fields.utime + fields.stime) / ticks,
            residentMemoryBytes: Double(fields.rss) * Double(pageSize),
            virtualMemoryBytes: Double(fields.vsize),
            openFDs: openFDs,
            maxFDs: maxFDs,
            startTimeSeconds: bootTimeSeconds + Double(fields.starttime) / ticks)
    }

    /// The soft limit of the `Max open files` line of `/proc/<pid>/limits`; `Int.max` for `unlimited`.
    public static func maxOpenFiles(limits: String) -> Int? {
        let prefix = "Max open files"
        guard let line = limits.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) else { return nil }
        guard let soft = line.dropFirst(prefix.count).split(whereSeparator: \.isWhitespace).first else { return nil }
        if soft == "unlimited" { return Int.max }
        return Int(soft)
    }

    /// The boot time in seconds since the Unix epoch, from the `btime` line of `/proc/stat`.
    public static func bootTime(procStat: String) -> Double? {
        for line in procStat.split(separator: "\n") {
            let words = line.split(whereSeparator: \.isWhitespace)
            if words.count == 2, words[0] == "btime", let seconds = Int(words[1]) { return Double(seconds) }
        }
        return nil
    }
}

/// The fields of `/proc/<pid>/stat` the process metrics need (numbering as in proc(5)).
private struct StatFields {
    /// Field 14 and 15: user and system CPU time, in clock ticks.
    var utime: UInt64
    var stime: UInt64
    /// Field 22: start time after boot, in clock ticks.
    var starttime: UInt64
    /// Field 23: virtual memory size in bytes.
    var vsize: UInt64
    /// Field 24: resident set size in pages.
    var rss: UInt64

    /// Parses the line; the command name (field 2) may hold spaces and parentheses, so the fields are
    /// counted from the LAST `)`, after which field 3 (`state`) comes.
    init?(_ stat: String) {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(whereSeparator: \.isWhitespace)
        // fields[0] is field 3, so field n is fields[n - 3].
        func field(_ number: Int) -> UInt64? {
            number - 3 < fields.count ? UInt64(fields[number - 3]) : nil
        }
        guard let utime = field(14), let stime = field(15), let starttime = field(22), let vsize = field(23),
            let rss = field(24)
        else { return nil }
        self.utime = utime
        self.stime = stime
        self.starttime = starttime
        self.vsize = vsize
        self.rss = rss
    }
}
