import PGConnCore
import Testing

@Suite struct ProcessStatsTests {
    /// A /proc/self/stat line whose command name holds spaces and parentheses, as `prctl(PR_SET_NAME)` allows.
    static let stat = """
        4242 (pgconn (x) y) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 130 0 0 20 0 3 0 123400 987654321 2048 \
        18446744073709551615 94412077621248 94412077641129 140731192085200 0 0 0 0 4096 0 0 0 0 17 1 0 0 0 0 0

        """

    static let limits = """
        Limit                     Soft Limit           Hard Limit           Units     
        Max cpu time              unlimited            unlimited            seconds   
        Max file size             unlimited            unlimited            bytes     
        Max open files            1024                 524288               files     
        Max locked memory         8388608              8388608              bytes     

        """

    static let procStat = """
        cpu  10132153 290696 3084719 46828483 16683 0 25195 0 0 0
        intr 1462898 0 9 0 0 0 0 0 0 1 0 0 0 0 0 0 0
        ctxt 115315
        btime 1700000000
        processes 8426
        procs_running 1

        """

    @Test func parsesStatAndLimits() {
        let stats = ProcessStats.parse(
            stat: Self.stat, limits: Self.limits, openFDs: 7, clockTicksPerSecond: 100, pageSize: 4096,
            bootTimeSeconds: 1_700_000_000)
        #expect(
            stats
                == ProcessStats(
                    cpuSecondsTotal: 3.8, residentMemoryBytes: 8_388_608, virtualMemoryBytes: 987_654_321,
                    openFDs: 7, maxFDs: 1024, startTimeSeconds: 1_700_001_234))
    }

    @Test func usesTheGivenClockTicksAndPageSize() {
        let stats = ProcessStats.parse(
            stat: Self.stat, limits: Self.limits, openFDs: 1, clockTicksPerSecond: 1000, pageSize: 65536,
            bootTimeSeconds: 0)
        #expect(stats?.cpuSecondsTotal == 0.38)
        #expect(stats?.residentMemoryBytes == 134_217_728)
        #expect(stats?.startTimeSeconds == 123.4)
    }

    static let malformedStats: [String] = [
        "",
        "4242 pgconn S 1 4242",
        "4242 (pgconn) S 1 4242 4242 0 -1 4194560 1200 0 3 0 250 130 0 0 20 0 3 0 123400 987654321",
        "4242 (pgconn) S 1 4242 4242 0 -1 4194560 1200 0 3 0 x 130 0 0 20 0 3 0 123400 987654321 2048",
    ]

    @Test(arguments: malformedStats)
    func rejectsMalformedStat(stat: String) {
        let stats = ProcessStats.parse(
            stat: stat, limits: Self.limits, openFDs: 1, clockTicksPerSecond: 100, pageSize: 4096, bootTimeSeconds: 0)
        #expect(stats == nil)
    }

    @Test func rejectsZeroClockTicksOrPageSize() {
        #expect(
            ProcessStats.parse(
                stat: Self.stat, limits: Self.limits, openFDs: 1, clockTicksPerSecond: 0, pageSize: 4096,
                bootTimeSeconds: 0) == nil)
        #expect(
            ProcessStats.parse(
                stat: Self.stat, limits: Self.limits, openFDs: 1, clockTicksPerSecond: 100, pageSize: 0,
                bootTimeSeconds: 0) == nil)
    }

    static let limitCases: [(String, Int?)] = [
        (limits, 1024),
        ("Max open files            unlimited            unlimited            files     \n", Int.max),
        ("Max open files            20000                20000                files", 20000),
        ("Max processes             63484                63484                processes\n", nil),
        ("Max open files            lots                 lots                 files\n", nil),
        ("", nil),
    ]

    @Test(arguments: limitCases)
    func maxOpenFiles(limits: String, expected: Int?) {
        #expect(ProcessStats.maxOpenFiles(limits: limits) == expected)
    }

    static let bootTimeCases: [(String, Double?)] = [
        (procStat, 1_700_000_000),
        ("btime 1795849513", 1_795_849_513),
        ("cpu  1 2 3\nctxt 5\n", nil),
        ("btime soon\n", nil),
    ]

    @Test(arguments: bootTimeCases)
    func bootTime(procStat: String, expected: Double?) {
        #expect(ProcessStats.bootTime(procStat: procStat) == expected)
    }
}
