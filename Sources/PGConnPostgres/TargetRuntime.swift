import PGConnCore

/// Which timer of which target a heap entry belongs to.
struct TimerTag: Sendable {
    enum Kind: Sendable { case session, login }
    var id: Int
    var kind: Kind
}

enum QueryKind {
    case facts
    case probe
}

enum ConnectionRole {
    case session
    case login
}

/// One connection of a target (its session, or its current login check) and what it is doing.
final class ConnectionSlot {
    /// Where the slot stands with ``ConnectAdmission``.
    enum Admission {
        case none
        case waiting
        case holding
    }

    let role: ConnectionRole
    var admission = Admission.none
    var connection: PostgresConnection?
    /// The socket registered with epoll, -1 when none.
    var socket: Int32 = -1
    var connecting = false
    /// The host-name lookup this slot waits for, if any.
    var ticket: UInt64?
    /// The query in flight on a session, and the results received so far.
    var query: QueryKind?
    var results: [PostgresConnection.QueryResult] = []

    init(role: ConnectionRole) { self.role = role }
}

/// One target's machines and connections; touched only on the monitor's I/O thread.
final class TargetRuntime {
    /// Stable for the target's life; not its position in the config.
    let id: Int
    let config: TargetConfig
    /// The DSN's host names to resolve before each connect, `nil` when libpq can connect without a lookup.
    let hostsNeedingLookup: [String]?
    var session: SessionStateMachine
    var login: LoginCheckStateMachine
    let sessionSlot = ConnectionSlot(role: .session)
    let loginSlot = ConnectionSlot(role: .login)
    var scheduledSession: MonotonicInstant?
    var scheduledLogin: MonotonicInstant?
    /// Whether this target has counted toward readiness.
    var reported = false

    init(id: Int, config: TargetConfig, seed: UInt64) {
        self.id = id
        self.config = config
        self.hostsNeedingLookup = HostResolver.hostsNeedingLookup(dsn: config.dsn)
        self.session = SessionStateMachine(config: config, seed: seed)
        self.login = LoginCheckStateMachine(
            interval: config.loginInterval, timeout: config.connectTimeout, seed: ~seed)
    }

    func slot(_ role: ConnectionRole) -> ConnectionSlot { role == .session ? sessionSlot : loginSlot }

    /// epoll tokens: the id shifted left, the low bit telling session (0) from login check (1).
    func token(_ role: ConnectionRole) -> UInt64 { UInt64(id) << 1 | (role == .session ? 0 : 1) }
}
