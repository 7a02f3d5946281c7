import Foundation
import PGConnCore
import PGConnTestSupport
import Testing

@testable import PGConnHTTP

/// HTTPS through libmicrohttpd and GnuTLS, checked with curl over loopback.
@Suite struct HTTPServerTLSTests {
    private func credentials(
        _ pki: TestCertificates, clientAuth: TLSServerSettings.ClientAuth = .noClientCert,
        minVersion: TLSServerSettings.Version = .tls12
    ) throws -> TLSCredentials {
        let settings = TLSServerSettings(
            certificate: .file(pki.serverCertificate), key: .file(pki.serverKey), clientAuth: clientAuth,
            clientCA: clientAuth == .noClientCert ? nil : .file(pki.caCertificate), minVersion: minVersion)
        return try TLSCredentials(
            certificate: pki.bytes(pki.serverCertificate), key: pki.bytes(pki.serverKey),
            clientCA: clientAuth == .noClientCert ? nil : pki.bytes(pki.caCertificate), settings: settings)
    }

    private func withTLSServer(_ credentials: TLSCredentials, _ body: (HTTPServer, String) throws -> Void) throws {
        let server = HTTPServer(
            listenAddress: "127.0.0.1:0", tls: credentials, handler: { _ in .text("secret page\n") })
        try server.start()
        defer { server.stop() }
        try body(server, "https://127.0.0.1:\(server.boundPort)/metrics")
    }

    @Test func servesHTTPSThatCurlVerifiesAndRefusesPlainHTTP() throws {
        let pki = try TestCertificates()
        defer { pki.remove() }
        try withTLSServer(credentials(pki)) { server, url throws in
            let answer = try curl(url, ["--cacert", pki.caCertificate])
            #expect(answer.status == 200)
            #expect(answer.body == "secret page\n")
            // Without the CA curl cannot verify the server; plain HTTP gets no page.
            #expect(try curl(url).status == 0)
            let plain = try curl("http://127.0.0.1:\(server.boundPort)/metrics")
            #expect(!plain.body.contains("secret page"))
        }
    }

    @Test func requireAndVerifyClientCertRefusesClientsWithoutAGoodCertificate() throws {
        let pki = try TestCertificates()
        let stranger = try TestCertificates(name: "another CA")
        defer {
            pki.remove()
            stranger.remove()
        }
        try withTLSServer(credentials(pki, clientAuth: .requireAndVerifyClientCert)) { _, url throws in
            let trusted = ["--cacert", pki.caCertificate]
            #expect(try curl(url, trusted).status == 0)
            let signed = trusted + ["--cert", pki.clientCertificate, "--key", pki.clientKey]
            #expect(try curl(url, signed).status == 200)
            let foreign = trusted + ["--cert", stranger.clientCertificate, "--key", stranger.clientKey]
            #expect(try curl(url, foreign).status == 0)
        }
    }

    @Test func verifyClientCertIfGivenLetsClientsWithoutOneThrough() throws {
        let pki = try TestCertificates()
        let stranger = try TestCertificates(name: "another CA")
        defer {
            pki.remove()
            stranger.remove()
        }
        try withTLSServer(credentials(pki, clientAuth: .verifyClientCertIfGiven)) { _, url throws in
            let trusted = ["--cacert", pki.caCertificate]
            #expect(try curl(url, trusted).status == 200)
            let foreign = trusted + ["--cert", stranger.clientCertificate, "--key", stranger.clientKey]
            #expect(try curl(url, foreign).status == 0)
        }
    }

    @Test func replacedCredentialsServeTheNewCertificate() throws {
        let first = try TestCertificates(name: "first CA")
        let second = try TestCertificates(name: "second CA")
        defer {
            first.remove()
            second.remove()
        }
        try withTLSServer(credentials(first)) { server, url throws in
            #expect(try curl(url, ["--cacert", first.caCertificate]).status == 200)
            #expect(server.replaceTLS(try credentials(second)))
            #expect(try curl(url, ["--cacert", second.caCertificate]).status == 200)
            #expect(try curl(url, ["--cacert", first.caCertificate]).status == 0)
        }
    }

    @Test func minVersionRefusesOlderProtocols() throws {
        let pki = try TestCertificates()
        defer { pki.remove() }
        try withTLSServer(credentials(pki, minVersion: .tls13)) { _, url throws in
            #expect(try curl(url, ["--cacert", pki.caCertificate, "--tls-max", "1.2"]).status == 0)
            #expect(try curl(url, ["--cacert", pki.caCertificate, "--tlsv1.3"]).status == 200)
        }
    }

    @Test func mismatchedKeyAndBadPEMAreErrorsThatNameThePart() throws {
        let pki = try TestCertificates()
        defer { pki.remove() }
        let settings = TLSServerSettings(certificate: .file(pki.serverCertificate), key: .file(pki.clientKey))
        let certificate = try pki.bytes(pki.serverCertificate)
        let key = try pki.bytes(pki.serverKey)
        let otherKey = try pki.bytes(pki.clientKey)
        func failure(_ certificate: [UInt8], _ key: [UInt8], _ clientCA: [UInt8]?) -> String? {
            do {
                _ = try TLSCredentials(certificate: certificate, key: key, clientCA: clientCA, settings: settings)
                return nil
            } catch {
                return error.description
            }
        }
        #expect(failure(certificate, key, nil) == nil)
        #expect(failure(certificate, otherKey, nil)?.hasPrefix("certificate and key: ") == true)
        #expect(failure(Array("not a certificate".utf8), key, nil)?.hasPrefix("certificate and key: ") == true)
        #expect(failure(certificate, key, Array("junk".utf8))?.hasPrefix("client CA: ") == true)
    }
}
