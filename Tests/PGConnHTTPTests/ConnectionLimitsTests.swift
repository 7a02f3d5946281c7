import Testing

@testable import PGConnHTTP

@Suite struct ConnectionLimitsTests {
    @Test(arguments: [
        (64, 16, 4),  // a tiny limit still leaves a usable server
        (1_024, 256, 64),  // the usual default soft limit
        (4_096, 1_024, 64),
        (1_048_576, 1_024, 64),  // systemd's hard limit, after the executable raised the soft one
    ])
    func sizedFromTheOpenFileLimit(openFileLimit: Int, total: Int, perAddress: Int) {
        let limits = ConnectionLimits.sized(openFileLimit: openFileLimit)
        #expect(limits.total == total)
        #expect(limits.perAddress == perAddress)
        #expect(limits.idleTimeout == .seconds(10))
        #expect(limits.requestDeadline == .seconds(10))
    }

    @Test(arguments: [
        (Duration.seconds(10), 10),
        (.milliseconds(1_200), 2),
        (.milliseconds(1), 1),
        (.zero, 1),  // 0 would mean no timeout at all
    ])
    func idleTimeoutRoundsUpToWholeSeconds(timeout: Duration, seconds: Int) {
        let limits = ConnectionLimits(total: 16, perAddress: 4, idleTimeout: timeout, requestDeadline: .seconds(1))
        #expect(limits.idleTimeoutSeconds == seconds)
    }
}
