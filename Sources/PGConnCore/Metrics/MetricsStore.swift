import PGConnSync
public import Synchronization

/// Versions shown in `pgconn_exporter_build_info`.
public struct BuildInfo: Sendable, Equatable {
    public var version: String
    public var revision: String
    public var libpqVersion: String
    public var microhttpdVersion: String

    public init(version: String, revision: String, libpqVersion: String, microhttpdVersion: String) {
        self.version = version
        self.revision = revision
        self.libpqVersion = libpqVersion
        self.microhttpdVersion = microhttpdVersion
    }
}

/// The latest observations of every target, behind one lock, rendered on demand for scrapes.
///
/// The I/O thread writes (a few dictionary updates per event); HTTP threads copy the values out and render
/// without holding the lock, so a scrape never waits on a database and never stalls the probe loop for
/// longer than a copy. Targets keep config order in the output.
///
/// Written by hand rather than with swift-prometheus 2.4: its registry copies a family's whole dictionary on
/// every new label set, which took 24 s to register one reason-labelled family for 2,000 targets (quadratic),
/// and its output order follows a dictionary, which rules out golden tests.
public final class MetricsStore: Sendable {
    struct State {
        /// Target ids in config order.
        var order: [Int] = []
        var targets: [Int: TargetSeries] = [:]
        /// Apart from `targets`, so scrapes never copy them.
        var events: [Int: EventRing] = [:]
        var exporter = ExporterSeries()
        /// What the page shows of every target (`metrics:`); the series record everything regardless.
        var detail = MetricsDetail()
    }

    /// The values of the exporter's own families.
    struct ExporterSeries {
        var reloadSuccessful = true
        var reloadTimestamp: Double = 0
        var loopLag = Histogram(bounds: Histogram.loopLagBounds)
        var connectsInProgress = 0
        var connectsWaiting = 0
        var lookupsPending = 0
    }

    private let state = Lock(State())
    /// Outside `state`: log lines are dropped from any thread, perhaps one inside `update`, so no lock here.
    private let logLinesDropped = Atomic<UInt64>(0)
    /// On-demand probes: written by HTTP threads and the I/O loop, so atomics rather than `state`.
    private let probesRejected = Atomic<UInt64>(0)
    private let probesInFlight = Atomic<Int>(0)
    /// Bumped after every change that shows in the exposition (``generation``).
    private let changes = Atomic<UInt64>(0)
    private let rareChanges = Atomic<UInt64>(0)
    public let buildInfo: BuildInfo

    /// Changes whenever something the exposition shows was recorded, so a rendered page can be reused while it
    /// stays the same (values computed at render time, such as staleness and process stats, still age).
    /// Read it before rendering: a change during the render then makes the next request render again.
    public var generation: UInt64 { changes.load(ordering: .acquiring) }

    /// Changes with what a reader must see at once rather than within a page's age: the target set, a reload's
    /// outcome, a refused probe (every rare change also changes ``generation``).
    public var rareGeneration: UInt64 { rareChanges.load(ordering: .acquiring) }

    private func changed() { changes.wrappingAdd(1, ordering: .releasing) }

    private func changedRarely() {
        rareChanges.wrappingAdd(1, ordering: .releasing)
        changed()
    }

    public init(buildInfo: BuildInfo) {
        self.buildInfo = buildInfo
    }

    /// Sets the monitored targets, each under the monitor's stable id for it: a target whose id stays keeps its
    /// counters (and takes its new settings and labels), new ones start at 0, removed ones disappear. The
    /// monitor gives a target the same id for as long as it keeps its name.
    public func setTargets(_ targets: [(id: Int, config: TargetConfig)]) {
        defer { changedRarely() }
        state.withLock { state in
            var kept: [Int: TargetSeries] = [:]
            for (id, config) in targets {
                if var series = state.targets[id] {
                    series.reconfigure(config)
                    kept[id] = series
                } else {
                    kept[id] = TargetSeries(config: config)
                }
            }
            state.order = targets.map(\.id)
            state.targets = kept
            state.events = state.events.filter { kept[$0.key] != nil }
        }
    }

    /// How much of every target the page shows from now on (the config's `metrics:`, also on reload).
    public func setDetail(_ detail: MetricsDetail) {
        let changed = state.withLock { state in
            defer { state.detail = detail }
            return state.detail != detail
        }
        if changed { changedRarely() }
    }

    /// Changes one target's series under the lock. Unknown ids are ignored (a target removed by a reload).
    @discardableResult
    public func update<Result>(_ id: Int, _ body: (inout TargetSeries) -> Result) -> Result? {
        defer { changed() }
        return state.withLock { state in
            guard var series = state.targets.removeValue(forKey: id) else { return nil }
            let result = body(&series)
            state.targets[id] = series
            return result
        }
    }

    /// Adds to a target's event history (``EventRing``); unknown ids are ignored.
    public func recordEvent(_ id: Int, _ event: TargetEvent) {
        state.withLock { state in
            guard state.targets[id] != nil else { return }
            state.events[id, default: EventRing()].append(event)
        }
    }

    /// The event history, newest last: of one target (`nil` if no target has that name) or of all, from
    /// `since` (Unix seconds) on.
    public func events(target name: String?, since: Double?) -> [(target: String, event: TargetEvent)]? {
        let (names, rings) = state.withLock { state in
            (state.order.compactMap { id in state.targets[id].map { (id, $0.name) } }, state.events)
        }
        let chosen = name.map { name in names.filter { $0.1 == name } } ?? names
        if name != nil && chosen.isEmpty { return nil }
        var all: [(target: String, event: TargetEvent)] = []
        for (id, target) in chosen {
            for event in rings[id]?.events ?? [] where event.time >= (since ?? -.infinity) {
                all.append((target, event))
            }
        }
        // Stable: events of the same instant keep their targets' config order.
        return all.enumerated().sorted { ($0.element.event.time, $0.offset) < ($1.element.event.time, $1.offset) }
            .map(\.element)
    }

    public func recordLoopLag(seconds: Double) {
        state.withLock { $0.exporter.loopLag.observe(seconds) }
        changed()
    }

    /// The connect queue (``ConnectAdmission``): connections being established, and connects waiting their turn.
    public func recordConnects(inProgress: Int, waiting: Int) {
        defer { changed() }
        state.withLock { state in
            state.exporter.connectsInProgress = inProgress
            state.exporter.connectsWaiting = waiting
        }
    }

    /// Host-name lookups submitted to the resolver threads and not answered yet (at most one per target).
    public func recordLookupsPending(_ count: Int) {
        state.withLock { $0.exporter.lookupsPending = count }
        changed()
    }

    /// Log lines that were not written: the log queue was full (stderr slower than the logging) or the write failed.
    /// A `/probe` request turned away (429) because the on-demand probe limit was reached.
    public func recordProbeRejected() {
        probesRejected.add(1, ordering: .relaxed)
        changedRarely()
    }

    /// An on-demand probe was asked for (`started`) or answered; the difference is the in-progress gauge.
    public func recordProbe(started: Bool) {
        defer { changed() }
        if started {
            probesInFlight.wrappingAdd(1, ordering: .relaxed)
        } else {
            probesInFlight.wrappingSubtract(1, ordering: .relaxed)
        }
    }

    public func recordLogLinesDropped(_ count: Int) {
        logLinesDropped.add(UInt64(count), ordering: .relaxed)
        changed()
    }

    public func recordReload(successful: Bool, wallClock: Double) {
        defer { changedRarely() }
        state.withLock { state in
            state.exporter.reloadSuccessful = successful
            if successful { state.exporter.reloadTimestamp = wallClock }
        }
    }

    /// A copy of every target's series, in config order.
    public func snapshot() -> [TargetSeries] {
        state.withLock { state in state.order.compactMap { state.targets[$0] } }
    }

    /// Renders every metric in the text format. `process` is read by the caller (from /proc) at scrape time, and
    /// so is `loopOverdue` (``Monitor``'s `overdue`), which must be fresh to show a stall while it lasts. `now`
    /// is read on the monotonic clock the observations were stamped with (`MonotonicInstant.now()`).
    public func render(
        wallClock: Double, now: MonotonicInstant, process: ProcessStats?, loopOverdue: Duration = .zero
    ) -> [UInt8] {
        let (targets, exporter, detail) = state.withLock { state in
            (state.order.compactMap { state.targets[$0] }, state.exporter, state.detail)
        }
        var out = ExpositionWriter(reservingCapacity: 2048 + targets.count * 12 * 1024)
        Self.renderTargets(targets, detail: detail, now: now, into: &out)
        Self.renderExporter(
            buildInfo: buildInfo, exporter, loopOverdue: loopOverdue,
            logLinesDropped: logLinesDropped.load(ordering: .relaxed), into: &out)
        renderProbes(into: &out)
        if let process { Self.renderProcess(process, into: &out) }
        return out.bytes
    }

    // MARK: - Families

    private static func renderTargets(
        _ targets: [TargetSeries], detail: MetricsDetail, now: MonotonicInstant, into out: inout ExpositionWriter
    ) {
        // Each target's `target="..."` is rendered and escaped once, not once per sample.
        let labelSets = targets.map { LabelSet([("target", $0.name)]) }
        func each(_ body: (TargetSeries, LabelSet) -> Void) {
            for index in targets.indices { body(targets[index], labelSets[index]) }
        }
        func gauge(_ name: String, _ help: String, _ value: (TargetSeries) -> Double?) {
            out.family(name, .gauge, help: help)
            each { series, labels in if let v = value(series) { out.sample(name, labels, nil, v) } }
        }
        func counter(_ name: String, _ help: String, _ value: (TargetSeries) -> UInt64) {
            out.family(name, .counter, help: help)
            each { series, labels in out.sample(name, labels, nil, value(series)) }
        }
        let seenOnly = detail.reasons == .seen
        func reasons(_ name: String, _ help: String, _ value: (TargetSeries) -> [FailureReason: UInt64]) {
            out.family(name, .counter, help: help)
            each { series, labels in
                let counts = value(series)
                for reason in FailureReason.allCases {
                    if let count = counts[reason], count > 0 || !seenOnly {
                        out.sample(name, labels, ("reason", reason.rawValue), count)
                    }
                }
            }
        }
        func histogram(
            _ name: String, _ help: String, coarse: [Double], _ value: (TargetSeries) -> Histogram
        ) {
            switch detail.histograms {
            case .off:
                return
            case .coarse:
                out.family(name, .histogram, help: help)
                each { series, labels in out.histogram(name, labels, value(series).coarsened(to: coarse)) }
            case .full:
                out.family(name, .histogram, help: help)
                each { series, labels in out.histogram(name, labels, value(series)) }
            }
        }
        func bool(_ value: Bool) -> Double { value ? 1 : 0 }

        gauge("pgconn_up", "1 if the session's last probe succeeded and is not stale, else 0.") {
            bool($0.isUp(now: now))
        }
        gauge(
            "pgconn_login_up",
            "1 if the last login check (a fresh connection) succeeded, else 0; absent before the first."
        ) {
            $0.loginEnabled && $0.loginChecked ? bool($0.loginUp) : nil
        }
        out.family("pgconn_state", .gauge, help: "1 for the session's current state, 0 for the others.")
        each { series, labels in
            for state in SessionStateMachine.StateName.allCases {
                out.sample("pgconn_state", labels, ("state", state.rawValue), bool(series.state == state))
            }
        }
        counter("pgconn_probes_total", "Probes run on the session.") { $0.probes }
        reasons("pgconn_probe_failures_total", "Probes that failed, by reason.") { $0.probeFailures }
        histogram(
            "pgconn_probe_duration_seconds", "Round trip of the probe query on the session.",
            coarse: Histogram.probeCoarseBounds
        ) { $0.probeDuration }
        histogram(
            "pgconn_connect_duration_seconds",
            "Time to establish a connection (TCP, TLS, authentication, startup), for sessions and login checks.",
            coarse: Histogram.connectCoarseBounds
        ) { $0.connectDuration }
        counter("pgconn_connection_attempts_total", "Session connection attempts.") { $0.connectionAttempts }
        reasons("pgconn_connection_failures_total", "Session connection attempts that failed, by reason.") {
            $0.connectionFailures
        }
        counter("pgconn_login_checks_total", "Login checks run (a fresh connection opened and closed).") {
            $0.loginChecks
        }
        reasons("pgconn_login_failures_total", "Login checks that failed, by reason.") { $0.loginFailures }
        reasons("pgconn_disconnects_total", "Established sessions lost, by reason.") { $0.disconnects }
        counter("pgconn_resets_total", "Broken or dirty sessions discarded and reconnection started.") { $0.resets }
        gauge("pgconn_consecutive_failures", "Probe and connection failures since the last successful probe.") {
            Double($0.consecutiveFailures)
        }
        gauge("pgconn_last_success_timestamp_seconds", "Unix time of the last successful probe, 0 before the first.") {
            $0.lastSuccess
        }
        gauge("pgconn_session_start_timestamp_seconds", "Unix time the current session was established, 0 without one.")
        {
            $0.sessionStart
        }
        counter("pgconn_outages_total", "Outages: from the first failure to the next successful probe.") { $0.outages }
        histogram(
            "pgconn_outage_duration_seconds", "Length of finished outages.", coarse: Histogram.outageCoarseBounds
        ) { $0.outageDuration }
        out.family("pgconn_downtime_seconds_total", .counter, help: "Time spent in outages, growing during one.")
        each { series, labels in out.sample("pgconn_downtime_seconds_total", labels, nil, series.downtime) }
        gauge("pgconn_backoff_seconds", "Current delay before the next reconnect attempt, 0 when not backing off.") {
            $0.backoff
        }
        out.family("pgconn_server_info", .gauge, help: "1, with the server version read at the last connect.")
        each { series, labels in
            if let version = series.serverVersion {
                out.sample("pgconn_server_info", labels, ("server_version", version), 1.0)
            }
        }
        gauge("pgconn_server_in_recovery", "1 if the server is in recovery (a standby), 0 if not.") {
            $0.inRecovery.map(bool)
        }
        gauge("pgconn_server_start_time_seconds", "Unix time the server (postmaster) started; a change is a restart.") {
            $0.serverStartTime
        }
        gauge(
            "pgconn_server_replay_lag_seconds",
            "How far the standby's replay is behind (expect: standby targets): 0 when it has replayed all it received."
        ) { $0.replayLag }
        counter(
            "pgconn_role_changes_total",
            "Changes of the connected server's role (pg_is_in_recovery()), such as a promotion under a live session."
        ) { $0.roleChanges }
        out.family(
            "pgconn_session_server_info", .gauge,
            help: "1, with the host and port the latest session connected to (libpq's; the DSN may list several).")
        each { series, labels in
            if let server = series.server {
                out.sample(
                    "pgconn_session_server_info",
                    LabelSet([("target", series.name), ("host", server.host), ("port", server.port)]), nil, 1.0)
            }
        }
        // Only for targets whose DSN lists several hosts (or that switched anyway).
        out.family(
            "pgconn_host_switches_total", .counter,
            help: "Sessions that connected to another host or port than the one before.")
        each { series, labels in
            if series.showsSwitches { out.sample("pgconn_host_switches_total", labels, nil, series.hostSwitches) }
        }
        out.family(
            "pgconn_failovers_total", .counter,
            help: "Outages that ended on another server than the one the session was on when they began.")
        each { series, labels in
            if series.showsSwitches { out.sample("pgconn_failovers_total", labels, nil, series.failovers) }
        }
        if detail.histograms != .off {
            out.family(
                "pgconn_failover_duration_seconds", .histogram,
                help:
                    "Length of failovers: from the first failure to the first successful probe in the expected role on the new server."
            )
            each { series, labels in
                guard series.showsSwitches else { return }
                let histogram =
                    detail.histograms == .coarse
                    ? series.failoverDuration.coarsened(to: Histogram.failoverCoarseBounds) : series.failoverDuration
                out.histogram("pgconn_failover_duration_seconds", labels, histogram)
            }
        }
        out.family(
            "pgconn_tls_info", .gauge,
            help: "1, with the TLS version and cipher of the latest session; absent without TLS.")
        each { series, _ in
            if let tls = series.server?.tls {
                out.sample(
                    "pgconn_tls_info",
                    LabelSet([("target", series.name), ("version", tls.version), ("cipher", tls.cipher)]), nil, 1.0)
            }
        }
        gauge(
            "pgconn_tls_cert_not_after_timestamp_seconds",
            "Unix time the server certificate of the latest TLS session expires (its notAfter)."
        ) { $0.server?.tls?.certificateNotAfter }
        out.family("pgconn_target_info", .gauge, help: "1, with the target's connection parameters and labels.")
        each { series, _ in
            out.sample("pgconn_target_info", LabelSet([("target", series.name)] + series.infoLabels), nil, 1.0)
        }
    }

    private static func renderExporter(
        buildInfo: BuildInfo, _ exporter: ExporterSeries, loopOverdue: Duration, logLinesDropped: UInt64,
        into out: inout ExpositionWriter
    ) {
        out.family("pgconn_exporter_build_info", .gauge, help: "1, with the exporter's and its libraries' versions.")
        out.sample(
            "pgconn_exporter_build_info",
            [
                ("version", buildInfo.version), ("revision", buildInfo.revision),
                ("libpq_version", buildInfo.libpqVersion), ("microhttpd_version", buildInfo.microhttpdVersion),
            ], 1.0)
        out.family(
            "pgconn_exporter_config_last_reload_successful", .gauge,
            help: "1 if the last configuration load succeeded, else 0.")
        out.sample("pgconn_exporter_config_last_reload_successful", [], exporter.reloadSuccessful ? 1.0 : 0.0)
        out.family(
            "pgconn_exporter_config_last_reload_success_timestamp_seconds", .gauge,
            help: "Unix time of the last successful configuration load.")
        out.sample("pgconn_exporter_config_last_reload_success_timestamp_seconds", [], exporter.reloadTimestamp)
        out.family(
            "pgconn_exporter_loop_lag_seconds", .histogram,
            help: "How late the I/O loop's timers fire: saturation of the probe thread.")
        out.histogram("pgconn_exporter_loop_lag_seconds", [], exporter.loopLag)
        out.family(
            "pgconn_exporter_loop_overdue_seconds", .gauge,
            help: "How overdue the I/O loop's earliest timer is at scrape time; grows while the loop is stalled.")
        out.sample("pgconn_exporter_loop_overdue_seconds", [], loopOverdue.seconds)
        out.family(
            "pgconn_exporter_connects_in_progress", .gauge,
            help: "Connections (sessions and login checks) being established now; at most the connect limit.")
        out.sample("pgconn_exporter_connects_in_progress", [], Double(exporter.connectsInProgress))
        out.family(
            "pgconn_exporter_connects_waiting", .gauge,
            help: "Connects waiting for their turn under the connect limit (their timeout has not started).")
        out.sample("pgconn_exporter_connects_waiting", [], Double(exporter.connectsWaiting))
        out.family(
            "pgconn_exporter_dns_lookups_pending", .gauge,
            help: "Host-name lookups submitted and not answered yet (at most one per target).")
        out.sample("pgconn_exporter_dns_lookups_pending", [], Double(exporter.lookupsPending))
        out.family(
            "pgconn_exporter_log_lines_dropped_total", .counter,
            help: "Log lines not written to stderr: the log queue was full (stderr too slow) or the write failed.")
        out.sample("pgconn_exporter_log_lines_dropped_total", [], logLinesDropped)
    }

    private func renderProbes(into out: inout ExpositionWriter) {
        out.family(
            "pgconn_exporter_probes_in_progress", .gauge,
            help: "On-demand probes (/probe) asked for and not answered yet; at most --probe.max-concurrent.")
        out.sample("pgconn_exporter_probes_in_progress", [], Double(probesInFlight.load(ordering: .relaxed)))
        out.family(
            "pgconn_exporter_probes_rejected_total", .counter,
            help: "/probe requests answered 429 because --probe.max-concurrent probes were in progress.")
        out.sample("pgconn_exporter_probes_rejected_total", [], probesRejected.load(ordering: .relaxed))
    }

    private static func renderProcess(_ process: ProcessStats, into out: inout ExpositionWriter) {
        out.family("process_cpu_seconds_total", .counter, help: "Total user and system CPU time spent in seconds.")
        out.sample("process_cpu_seconds_total", [], process.cpuSecondsTotal)
        out.family("process_resident_memory_bytes", .gauge, help: "Resident memory size in bytes.")
        out.sample("process_resident_memory_bytes", [], process.residentMemoryBytes)
        out.family("process_virtual_memory_bytes", .gauge, help: "Virtual memory size in bytes.")
        out.sample("process_virtual_memory_bytes", [], process.virtualMemoryBytes)
        out.family("process_open_fds", .gauge, help: "Number of open file descriptors.")
        out.sample("process_open_fds", [], Double(process.openFDs))
        out.family("process_max_fds", .gauge, help: "Maximum number of open file descriptors.")
        out.sample("process_max_fds", [], Double(process.maxFDs))
        out.family("process_start_time_seconds", .gauge, help: "Start time of the process since unix epoch in seconds.")
        out.sample("process_start_time_seconds", [], process.startTimeSeconds)
    }
}
