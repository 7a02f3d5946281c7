/// Why an `HTTPServer` could not start listening.
///
/// Both cases carry the listen address exactly as the user wrote it (e.g. the `--web.listen-address`
/// flag), so the message points at the flag to fix.
public enum HTTPServerError: Error, Equatable, CustomStringConvertible {
    /// The address is not `[host]:port` or its host does not resolve; `reason` says which part is wrong.
    case invalidListenAddress(String, reason: String)
    /// The address is valid but the socket could not be bound; `reason` is the system's error text
    /// (e.g. "Address already in use").
    case bindFailed(String, reason: String)

    public var description: String {
        switch self {
        case .invalidListenAddress(let address, let reason):
            "invalid listen address \"\(address)\": \(reason)"
        case .bindFailed(let address, let reason):
            "cannot listen on \"\(address)\": \(reason)"
        }
    }
}
