/// What an on-demand probe probes.
public enum ProbeSubject: Sendable {
    /// A configured target, by name: probed with its own settings.
    case configured(String)
    /// A target Prometheus discovered, with the settings its module gives it (``ProbeModule/targetConfig(for:)``).
    case discovered(TargetConfig)
}

/// The outcome of one on-demand probe (`/probe`): a fresh connect, the query and the close, as
/// blackbox_exporter's probes are, rendered with `probe_*` families only.
public struct ProbeResult: Sendable, Equatable {
    /// `nil` when the probe succeeded.
    public var failure: Failure?
    /// From the request reaching the I/O loop to the reply (or the failure).
    public var duration: Duration
    /// Password, lookup, TCP, TLS and authentication: up to the connection being ready, or up to the failure.
    public var connectDuration: Duration
    /// From sending the query to its reply; zero when no query was sent.
    public var queryDuration: Duration
    /// `server_version` as the server reported it at startup; `nil` when it never got that far.
    public var serverVersion: String?
    /// `pg_is_in_recovery()`, when the query ran.
    public var inRecovery: Bool?
    /// The connection's TLS version, cipher and server certificate expiry, when it used TLS.
    public var tls: TLSDetails?
    /// What happened, for `&debug=true`.
    public var trace: [TraceLine]

    public struct TraceLine: Sendable, Equatable {
        /// Since the probe started.
        public var at: Duration
        public var text: String

        public init(at: Duration, text: String) {
            self.at = at
            self.text = text
        }
    }

    public init(
        failure: Failure?, duration: Duration, connectDuration: Duration = .zero, queryDuration: Duration = .zero,
        serverVersion: String? = nil, inRecovery: Bool? = nil, tls: TLSDetails? = nil, trace: [TraceLine] = []
    ) {
        self.tls = tls
        self.failure = failure
        self.duration = duration
        self.connectDuration = connectDuration
        self.queryDuration = queryDuration
        self.serverVersion = serverVersion
        self.inRecovery = inRecovery
        self.trace = trace
    }

    public var succeeded: Bool { failure == nil }

    /// A probe that never reached the loop's connection machinery (the exporter is stopping, the target went away).
    public static func failed(_ failure: Failure, note: String? = nil) -> ProbeResult {
        var trace = [TraceLine(at: .zero, text: failure.description)]
        if let note { trace.insert(TraceLine(at: .zero, text: note), at: 0) }
        return ProbeResult(failure: failure, duration: .zero, trace: trace)
    }

    /// What a finished reply to ``SessionQueries/onDemandProbe(for:)`` means: the failure, if any, and the role
    /// the server reported. A server in the wrong role for `expect` fails with `read_only`.
    public static func evaluate(_ reply: QueryReply, expect: ExpectedRole) -> (failure: Failure?, inRecovery: Bool?) {
        switch SessionReply.probe(reply, roleChecked: true) {
        case .lost(let failure), .probeFailed(let failure, _):
            return (failure, nil)
        case .probeSucceeded(let inRecovery, _, _):
            return (inRecovery.flatMap { expect.mismatch(inRecovery: $0) }, inRecovery)
        case .facts, .rolledBack:
            preconditionFailure("SessionReply.probe answers a probe event")
        }
    }

    /// The Prometheus text exposition of this probe: `probe_*` families only.
    public func exposition() -> [UInt8] {
        var out = ExpositionWriter(reservingCapacity: 1024)
        out.family("probe_success", .gauge, help: "1 if the probe connected, ran its query and closed without error.")
        out.sample("probe_success", [], succeeded ? 1.0 : 0.0)
        out.family("probe_duration_seconds", .gauge, help: "How long the probe took in all.")
        out.sample("probe_duration_seconds", [], duration.seconds)
        out.family(
            "probe_connect_duration_seconds", .gauge,
            help: "How long the connect took (password, DNS, TCP, TLS, authentication), up to its failure if it failed."
        )
        out.sample("probe_connect_duration_seconds", [], connectDuration.seconds)
        out.family(
            "probe_query_duration_seconds", .gauge, help: "How long the query took to answer; 0 if it was never sent.")
        out.sample("probe_query_duration_seconds", [], queryDuration.seconds)
        if let failure {
            out.family(
                "probe_failure_info", .gauge,
                help: "1, with the reason the probe failed (the reasons of pgconn_probe_failures_total).")
            out.sample("probe_failure_info", [("reason", failure.reason.rawValue)], 1.0)
        }
        if let serverVersion {
            out.family("probe_server_info", .gauge, help: "1, with the server_version the server reported.")
            out.sample("probe_server_info", [("server_version", serverVersion)], 1.0)
        }
        if let inRecovery {
            out.family("probe_server_in_recovery", .gauge, help: "1 if the server is in recovery (a standby), else 0.")
            out.sample("probe_server_in_recovery", [], inRecovery ? 1.0 : 0.0)
        }
        if let tls {
            // The names blackbox_exporter users know.
            out.family("probe_tls_version_info", .gauge, help: "1, with the TLS version of the probe's connection.")
            out.sample("probe_tls_version_info", [("version", tls.version)], 1.0)
            if let notAfter = tls.certificateNotAfter {
                out.family(
                    "probe_ssl_earliest_cert_expiry", .gauge,
                    help: "Unix time the server certificate expires (its notAfter).")
                out.sample("probe_ssl_earliest_cert_expiry", [], notAfter)
            }
        }
        return out.bytes
    }

    /// The `&debug=true` answer: the trace, then the metrics the probe would have returned.
    public func debugText(describing subject: String) -> String {
        var text = "Probe of \(subject)\n\nTrace:\n"
        for line in trace {
            let milliseconds = Double(line.at.nanoseconds) / 1e6
            var number = String(Int((milliseconds * 10).rounded()))
            while number.count < 2 { number = "0" + number }
            let stamp = "\(number.dropLast()).\(number.suffix(1))ms"
            text += String(repeating: " ", count: max(0, 10 - stamp.count)) + stamp + "  " + line.text + "\n"
        }
        text += "\nMetrics that would have been returned:\n"
        text += String(decoding: exposition(), as: UTF8.self)
        return text
    }
}

extension SessionQueries {
    /// An on-demand probe's query: the configured one, then always the role query, for `probe_server_in_recovery`.
    public static func onDemandProbe(for config: TargetConfig) -> String {
        config.query + "\n;\nSELECT pg_catalog.pg_is_in_recovery()"
    }
}

extension TargetConfig {
    /// The settings an on-demand probe of this target connects with: its own, bounded by `timeout` in all
    /// (connect and query together), which is also the `statement_timeout` the server enforces.
    public func forProbe(timeout: Duration) -> TargetConfig {
        var config = self
        config.probeTimeout = timeout
        config.connectTimeout = timeout
        config.loginInterval = .zero
        return config
    }
}
