/// What the server says about itself, read on every (re)connect.
///
/// Each field is optional: poolers such as PgBouncer cannot answer every query, and a target that
/// cannot report a fact still works, the fact is simply absent from the metrics.
public struct ServerFacts: Sendable, Equatable {
    /// `server_version` as reported at startup, such as `15.18 (Debian 15.18-0+deb12u1)`.
    public var version: String?
    /// `pg_is_in_recovery()`: true on a standby.
    public var inRecovery: Bool?
    /// `pg_postmaster_start_time()` as Unix seconds; a change between two connects means a restart.
    public var startTime: Double?

    public init(version: String? = nil, inRecovery: Bool? = nil, startTime: Double? = nil) {
        self.version = version
        self.inRecovery = inRecovery
        self.startTime = startTime
    }
}
