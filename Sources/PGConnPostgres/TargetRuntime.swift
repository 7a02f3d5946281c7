import PGConnCore

/// Which timer of which target a heap entry belongs to.
struct TimerTag: Sendable {
    enum Kind: Sendable {
        case session
        case login
        /// While backing off after a credential failure: time to look whether the password file changed.
        case credentials
        /// A deadline of an on-demand probe (``ProbeRun``): its own or one of its waiters'.
        case probe
        /// The loop's one timer for checking the ports of sessions backing off after a refused connect (id 0).
        case reachability
    }

    var id: Int
    var kind: Kind
}

enum QueryKind {
    case facts
    case probe
    case rollback
}

enum ConnectionRole: Hashable, CaseIterable {
    case session
    case login
    /// An on-demand probe's one connection (``ProbeRun``), on a runtime of its own.
    case probe

    /// The two low bits of an epoll token.
    var tokenBits: UInt64 {
        switch self {
        case .session: 0
        case .login: 1
        case .probe: 2
        }
    }
}

/// One connection of a target (its session, its current login check, or an on-demand probe's) and what it is doing.
///
/// A connect goes through `waitingTurn` (``ConnectAdmission``), `readingPassword` and `resolving` (both on
/// worker threads), `connecting` (libpq's start and `PQconnectPoll` steps, each on a connect worker while the
/// loop waits for the socket in between), then `established`. Closing returns it to `idle` from any stage.
final class ConnectionSlot {
    enum Stage: Equatable {
        case idle
        case waitingTurn
        case readingPassword(ticket: UInt64)
        /// Waiting for the target's lookup (``TargetRuntime/lookup``).
        case resolving
        case connecting
        case established
    }

    /// Where the slot stands with ``ConnectAdmission``.
    enum Admission {
        case none
        case waiting
        case holding
    }

    let role: ConnectionRole
    var stage = Stage.idle
    var admission = Admission.none
    var connection: (any DatabaseConnection)?
    /// The connect step running on a connect worker; while it runs the worker owns the connection and its socket
    /// is out of epoll (``ConnectStep``).
    var step: ConnectStep?
    /// The socket registered with epoll, -1 when none.
    var socket: Int32 = -1
    /// The password read for the connect in progress; dropped once libpq has it.
    var password: String?
    /// The query in flight on a session, and its reply so far (bounded by ``SessionReply/limits``).
    var query: QueryKind?
    var results: [QueryResultSummary] = []
    var resultBytes = 0

    init(role: ConnectionRole) { self.role = role }
}

/// The host-name lookup of one target: at most one at a time, shared by its session and login check.
struct TargetLookup {
    /// The lookup submitted and not yet answered (it may be stuck in a silent resolver).
    var inFlight: UInt64?
    /// The slots waiting for its answer.
    var waiters: Set<ConnectionRole> = []
}

/// One target's machines and connections; touched only on the monitor's I/O thread.
final class TargetRuntime {
    /// Stable for the target's life; not its position in the config.
    let id: Int
    /// Replaced by a reload that keeps the connection (``TargetConfig/keepsConnection(of:)``).
    var config: TargetConfig
    /// What the DSN and libpq's environment set (host, hostaddr, options, gssencmode, ...).
    let dsnValues: [String: String]
    /// The hosts to resolve before each connect, `nil` when libpq can connect without a lookup.
    let hostsNeedingLookup: [String]?
    var session: SessionStateMachine
    var login: LoginCheckStateMachine
    let sessionSlot = ConnectionSlot(role: .session)
    let loginSlot = ConnectionSlot(role: .login)
    /// Used only by the runtime of an on-demand probe (``ProbeRun``), which uses no other slot.
    let probeSlot = ConnectionSlot(role: .probe)
    var lookup = TargetLookup()
    var scheduledSession: MonotonicInstant?
    var scheduledLogin: MonotonicInstant?
    var scheduledCredentialCheck: MonotonicInstant?
    /// Where the session's last connect went, when libpq was given a single server (``Endpoint/of(values:hostaddr:)``).
    var endpoint: Endpoint?
    /// Whether sessions send `statement_timeout`/`lock_timeout` as startup options; false once the server (a
    /// pooler) refused them.
    var sendsServerTimeouts = true
    /// A cancel request of this target's is being sent: at most one at a time.
    var cancelInFlight = false
    /// The passwords the session and the login check last connected with (hashed, in-process only), to notice
    /// a changed file.
    var sessionPasswordHash: Int?
    var loginPasswordHash: Int?
    /// Whether this target has counted toward readiness.
    var reported = false
    /// Whether the probe and the login check have had a result: their first one is from `start` in the events.
    var probeFlipped = false
    var loginFlipped = false
    /// The failure being logged as ongoing, to log a repeated identical failure once (``FailureLogState``).
    var failureLog = FailureLogState()

    init(id: Int, config: TargetConfig, seed: UInt64) {
        self.id = id
        self.config = config
        self.dsnValues = DSNParser.effectiveValues(of: config.dsn)
        self.hostsNeedingLookup = HostResolver.hostsNeedingLookup(values: dsnValues)
        self.session = SessionStateMachine(config: config, seed: seed)
        self.login = LoginCheckStateMachine(
            interval: config.loginInterval, timeout: config.connectTimeout, seed: ~seed, backoff: config.backoff)
    }

    func slot(_ role: ConnectionRole) -> ConnectionSlot {
        switch role {
        case .session: sessionSlot
        case .login: loginSlot
        case .probe: probeSlot
        }
    }

    /// epoll tokens (and admission keys): the id shifted left, the two low bits the role.
    func token(_ role: ConnectionRole) -> UInt64 { UInt64(id) << 2 | role.tokenBits }

    /// The id and role a token stands for.
    static func decode(_ token: UInt64) -> (id: Int, role: ConnectionRole) {
        let role: ConnectionRole =
            switch token & 3 {
            case 0: .session
            case 1: .login
            default: .probe
            }
        return (Int(token >> 2), role)
    }
}
