/// Which server a connection reached and how: read from libpq when a connect completes.
///
/// With a DSN that lists several hosts (`host=db1,db2 target_session_attrs=read-write`) this is where the
/// session is now; a change between two connects is a switch of hosts, and a change across an outage is a
/// failover (``SessionStateMachine``).
public struct ConnectionDetails: Sendable, Equatable {
    /// `PQhost`: the host name (or socket directory) as the DSN gives it, not the resolved address.
    public var host: String
    /// `PQport`.
    public var port: String
    /// Present when the connection uses TLS.
    public var tls: TLSDetails?

    public init(host: String, port: String, tls: TLSDetails? = nil) {
        self.host = host
        self.port = port
        self.tls = tls
    }

    /// `host:port`, an IPv6 address in brackets, for logs and events.
    public var endpoint: String {
        host.contains(":") && !host.hasPrefix("/") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }

    /// Whether two connections reached the same server (host and port; TLS details may differ).
    public func sameServer(as other: ConnectionDetails) -> Bool {
        host == other.host && port == other.port
    }
}

/// The TLS side of a connection (`PQsslAttribute`), and the server certificate's expiry.
public struct TLSDetails: Sendable, Equatable {
    /// `TLSv1.3`.
    public var version: String
    /// `TLS_AES_256_GCM_SHA384`.
    public var cipher: String
    /// The server certificate's notAfter, Unix seconds; `nil` when it could not be read.
    public var certificateNotAfter: Double?

    public init(version: String, cipher: String, certificateNotAfter: Double? = nil) {
        self.version = version
        self.cipher = cipher
        self.certificateNotAfter = certificateNotAfter
    }
}
