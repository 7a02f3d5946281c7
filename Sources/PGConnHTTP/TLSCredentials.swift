import CMicroHTTPD
public import PGConnCore

/// What an HTTPS connection is given at its handshake: the server's certificate chain and key, the authorities
/// that sign client certificates, the GnuTLS priorities (TLS versions) and the client-certificate policy.
///
/// Built from PEM bytes (the executable reads the files, off the HTTP threads) and checked at once: a key
/// that does not match its certificate, or PEM that does not parse, is an error naming which part. A new
/// instance replaces the old one in a running ``HTTPServer`` (``HTTPServer/replaceTLS(_:)``); connections
/// accepted from then on use it, and each connection keeps the one it started with alive until it closes.
///
/// `@unchecked Sendable`: the GnuTLS credentials and priority cache are written only in `init` and `deinit`;
/// GnuTLS reads them from any number of sessions at once.
public final class TLSCredentials: @unchecked Sendable {
    /// The server's certificate chain in PEM, as libmicrohttpd needs it to start (it builds its own
    /// credentials from it, which every connection's are swapped for before its handshake).
    let certificatePEM: [UInt8]
    let keyPEM: [UInt8]
    let clientAuth: TLSServerSettings.ClientAuth
    /// The server certificate's SHA-256 fingerprint in hex, for the log line that says which one is served.
    public let fingerprint: String
    /// The server certificate's last valid time, Unix seconds (for `pgconn_exporter_web_tls_cert_not_after...`).
    public let notAfter: Int64
    private let credentials: gnutls_certificate_credentials_t
    private let priorities: gnutls_priority_t

    /// Checks and loads the PEM; throws a message that names the part at fault and never includes the key.
    public init(
        certificate: [UInt8], key: [UInt8], clientCA: [UInt8]?, settings: TLSServerSettings
    ) throws(TLSCredentialsError) {
        var credentials: gnutls_certificate_credentials_t?
        guard gnutls_certificate_allocate_credentials(&credentials) == GNUTLS_E_SUCCESS, let credentials else {
            throw TLSCredentialsError("cannot allocate TLS credentials")
        }
        var built = false
        defer { if !built { gnutls_certificate_free_credentials(credentials) } }
        let status = certificate.withDatum { cert in
            key.withDatum { key in gnutls_certificate_set_x509_key_mem(credentials, cert, key, GNUTLS_X509_FMT_PEM) }
        }
        guard status >= 0 else {
            throw TLSCredentialsError("certificate and key: \(Self.message(status))")
        }
        if let clientCA {
            let count = clientCA.withDatum {
                gnutls_certificate_set_x509_trust_mem(credentials, $0, GNUTLS_X509_FMT_PEM)
            }
            guard count > 0 else {
                throw TLSCredentialsError(
                    "client CA: \(count == 0 ? "no certificate in the PEM" : Self.message(count))")
            }
        }
        if settings.clientAuth.verifies {
            gnutls_certificate_set_verify_function(credentials, verifyClientCertificate)
        }
        var priorities: gnutls_priority_t?
        var errorAt: UnsafePointer<CChar>?
        let priorityText = settings.gnutlsPriorities
        guard gnutls_priority_init(&priorities, priorityText, &errorAt) == GNUTLS_E_SUCCESS, let priorities else {
            throw TLSCredentialsError("TLS versions: GnuTLS refused the priorities \"\(priorityText)\"")
        }
        let (fingerprint, notAfter) = Self.describe(certificate)
        self.certificatePEM = certificate
        self.keyPEM = key
        self.clientAuth = settings.clientAuth
        self.credentials = credentials
        self.priorities = priorities
        self.fingerprint = fingerprint
        self.notAfter = notAfter
        built = true
    }

    deinit {
        gnutls_priority_deinit(priorities)
        gnutls_certificate_free_credentials(credentials)
    }

    /// Sets up a session libmicrohttpd created for a new connection, before its handshake: these credentials
    /// and priorities, and the client-certificate policy. With a verifying policy a certificate the client
    /// sends is checked against the client CA during the handshake (`verifyClientCertificate`), which fails
    /// otherwise, as Go's does; `VerifyClientCertIfGiven` lets a client without one through.
    func apply(to session: gnutls_session_t) -> Bool {
        guard gnutls_priority_set(session, priorities) == GNUTLS_E_SUCCESS,
            gnutls_credentials_set(session, GNUTLS_CRD_CERTIFICATE, UnsafeMutableRawPointer(credentials))
                == GNUTLS_E_SUCCESS
        else { return false }
        switch clientAuth {
        case .noClientCert:
            gnutls_certificate_server_set_request(session, GNUTLS_CERT_IGNORE)
        case .requestClientCert, .verifyClientCertIfGiven:
            gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUEST)
        case .requireAnyClientCert, .requireAndVerifyClientCert:
            gnutls_certificate_server_set_request(session, GNUTLS_CERT_REQUIRE)
        }
        return true
    }

    private static func message(_ status: Int32) -> String {
        gnutls_strerror(status).map { String(cString: $0) } ?? "GnuTLS error \(status)"
    }

    /// The first certificate's SHA-256 fingerprint and expiry (already parsed once by GnuTLS above).
    private static func describe(_ pem: [UInt8]) -> (String, Int64) {
        var certificate: gnutls_x509_crt_t?
        guard gnutls_x509_crt_init(&certificate) == GNUTLS_E_SUCCESS, let certificate else { return ("", 0) }
        defer { gnutls_x509_crt_deinit(certificate) }
        guard pem.withDatum({ gnutls_x509_crt_import(certificate, $0, GNUTLS_X509_FMT_PEM) }) == GNUTLS_E_SUCCESS
        else { return ("", 0) }
        var digest = [UInt8](repeating: 0, count: 32)
        var size = digest.count
        let hex: String
        if gnutls_x509_crt_get_fingerprint(certificate, GNUTLS_DIG_SHA256, &digest, &size) == GNUTLS_E_SUCCESS {
            hex = digest.prefix(size).map { byte in
                let text = String(byte, radix: 16)
                return text.count == 1 ? "0" + text : text
            }.joined()
        } else {
            hex = ""
        }
        return (hex, Int64(gnutls_x509_crt_get_expiration_time(certificate)))
    }
}

/// Why PEM could not become ``TLSCredentials``.
public struct TLSCredentialsError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

extension [UInt8] {
    /// The bytes as a GnuTLS datum, valid inside `body` only.
    fileprivate func withDatum<R>(_ body: (UnsafePointer<gnutls_datum_t>) -> R) -> R {
        var copy = self
        return copy.withUnsafeMutableBufferPointer { buffer in
            var datum = gnutls_datum_t(data: buffer.baseAddress, size: UInt32(buffer.count))
            return body(&datum)
        }
    }
}

/// GnuTLS's verify callback for credentials with a verifying policy, run during the handshake once the client
/// sent its certificate: the chain must lead to the client CA, be in its validity period and be meant for TLS
/// clients. No certificate passes here; `GNUTLS_CERT_REQUIRE` refuses that case itself.
private let verifyClientCertificate: @convention(c) (OpaquePointer?) -> Int32 = { session in
    var count: UInt32 = 0
    guard let session, gnutls_certificate_get_peers(session, &count) != nil, count > 0 else { return 0 }
    var status: UInt32 = 0
    var purpose = gnutls_typed_vdata_st(type: GNUTLS_DT_KEY_PURPOSE_OID, data: clientAuthPurpose, size: 0)
    let result = gnutls_certificate_verify_peers(session, &purpose, 1, &status)
    return result == GNUTLS_E_SUCCESS && status == 0 ? 0 : -1
}

/// `GNUTLS_KP_TLS_WWW_CLIENT` (id-kp-clientAuth) as the NUL-terminated bytes GnuTLS reads; never written.
nonisolated(unsafe) private let clientAuthPurpose: UnsafeMutablePointer<UInt8> = {
    let bytes = Array(GNUTLS_KP_TLS_WWW_CLIENT.utf8) + [0]
    let pointer = UnsafeMutablePointer<UInt8>.allocate(capacity: bytes.count)
    pointer.initialize(from: bytes, count: bytes.count)
    return pointer
}()
