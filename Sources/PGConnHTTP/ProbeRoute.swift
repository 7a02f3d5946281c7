public import PGConnCore

/// What `/probe` needs from the rest of the process: the config in force and a way to start a probe.
public struct ProbeRoute: Sendable {
    /// The config in force: target names and modules.
    public var config: @Sendable () -> ValidatedConfig
    /// Starts a probe with a budget; `done` is called once with its result. False: too many in progress (429).
    public var start: @Sendable (ProbeSubject, Duration, @escaping @Sendable (ProbeResult) -> Void) -> Bool
    /// `--probe.timeout-offset`: taken off `X-Prometheus-Scrape-Timeout-Seconds`.
    public var timeoutOffset: Duration

    public init(
        config: @escaping @Sendable () -> ValidatedConfig,
        start: @escaping @Sendable (ProbeSubject, Duration, @escaping @Sendable (ProbeResult) -> Void) -> Bool,
        timeoutOffset: Duration = .milliseconds(500)
    ) {
        self.config = config
        self.start = start
        self.timeoutOffset = timeoutOffset
    }
}

/// The answer to a `/probe` request that is not probed.
struct Refusal: Error {
    var response: HTTPResponse

    init(_ text: String, status: Int) { response = .text(text, status: status) }
}

/// One `/probe` request, checked: what to probe, for how long, and how to answer. Pure, so every bad request
/// is a table test.
struct ProbePlan: Equatable {
    enum Subject: Equatable {
        case configured(String)
        /// The module as the config in force had it when the request was checked.
        case discovered(module: ProbeModule, address: ProbeAddress)
    }

    var subject: Subject
    var timeout: Duration
    var debug: Bool

    /// Who is probed, for the debug text.
    var description: String {
        switch subject {
        case .configured(let name): "target \(name)"
        case .discovered(let module, let address): "\(address) with module \(module.name)"
        }
    }

    /// The plan, or the 400/403/404 answer for a request that cannot be probed (nothing is connected then).
    static func make(
        query: [String: String], scrapeTimeoutHeader: String?, config: ValidatedConfig, offset: Duration
    ) -> Result<ProbePlan, Refusal> {
        guard let target = query["target"], !target.isEmpty else {
            return .failure(
                Refusal(
                    "Bad request: target is required: a configured target's name, or host[:port] with module=<name>\n",
                    status: 400))
        }
        var debug = false
        if let flag = query["debug"] {
            guard flag == "true" || flag == "false" else {
                return .failure(Refusal("Bad request: debug must be true or false (got \"\(flag)\")\n", status: 400))
            }
            debug = flag == "true"
        }
        let subject: Subject
        let cap: Duration
        if let moduleName = query["module"] {
            guard let module = config.module(named: moduleName) else {
                let known = config.modules.map(\.name).joined(separator: ", ")
                return .failure(
                    Refusal(
                        "Bad request: unknown module \"\(moduleName)\" "
                            + "(configured: \(known.isEmpty ? "none" : known))\n",
                        status: 400))
            }
            let address: ProbeAddress
            switch ProbeAddress.parse(target) {
            case .success(let parsed): address = parsed
            case .failure(let error): return .failure(Refusal("Bad request: target: \(error.message)\n", status: 400))
            }
            guard module.permits(address) else {
                return .failure(
                    Refusal(
                        "Forbidden: \(address) is not allowed by module \(module.name) (its allow and ports lists)\n",
                        status: 403))
            }
            subject = .discovered(module: module, address: address)
            cap = module.timeout
        } else {
            guard let configured = config.targets.first(where: { $0.name == target }) else {
                return .failure(
                    Refusal("Unknown target: \(target) (give module=<name> to probe a host)\n", status: 404))
            }
            subject = .configured(configured.name)
            cap = configured.connectTimeout + configured.probeTimeout
        }
        var timeout = cap
        if let header = scrapeTimeoutHeader {
            guard let seconds = Double(header.trimmingWhitespace()), seconds.isFinite, seconds > 0 else {
                return .failure(
                    Refusal(
                        "Bad request: X-Prometheus-Scrape-Timeout-Seconds must be a positive number "
                            + "(got \"\(header)\")\n",
                        status: 400))
            }
            let scrape = Duration.nanoseconds(Int64(min(seconds, 86_400) * 1e9))
            timeout = min(cap, max(scrape - offset, scrape / 2))
        }
        return .success(ProbePlan(subject: subject, timeout: timeout, debug: debug))
    }
}
