import Testing

@testable import PGConnHTTP

@Suite struct ListenAddressTests {
    @Test(arguments: [
        (":9818", ListenAddress(host: .allInterfaces, port: 9818)),
        ("[::]:9818", ListenAddress(host: .allInterfaces, port: 9818)),
        (":0", ListenAddress(host: .allInterfaces, port: 0)),
        (":65535", ListenAddress(host: .allInterfaces, port: 65535)),
        ("0.0.0.0:9818", ListenAddress(host: .ipv4([0, 0, 0, 0]), port: 9818)),
        ("127.0.0.1:9818", ListenAddress(host: .ipv4([127, 0, 0, 1]), port: 9818)),
        ("localhost:9818", ListenAddress(host: .ipv4([127, 0, 0, 1]), port: 9818)),
        ("[::1]:9818", ListenAddress(host: .ipv6([UInt8](repeating: 0, count: 15) + [1], scopeID: 0), port: 9818)),
    ])
    func parsesValidForms(text: String, expected: ListenAddress) throws {
        #expect(try ListenAddress(parsing: text) == expected)
    }

    @Test(arguments: [
        ("9818", #"invalid listen address "9818": missing port; expected [host]:port, e.g. ":9818""#),
        ("", #"invalid listen address "": missing port; expected [host]:port, e.g. ":9818""#),
        ("host:", #"invalid listen address "host:": missing port; expected [host]:port, e.g. ":9818""#),
        ("[::1]9818", #"invalid listen address "[::1]9818": missing port; expected [host]:port, e.g. ":9818""#),
        (":99999", #"invalid listen address ":99999": port 99999 is out of range 0-65535"#),
        (":abc", #"invalid listen address ":abc": port "abc" is not a number"#),
        (":-1", #"invalid listen address ":-1": port "-1" is not a number"#),
        ("::1:9818", #"invalid listen address "::1:9818": an IPv6 address must be in brackets, e.g. "[::1]:9818""#),
        ("[::1:9818", #"invalid listen address "[::1:9818": missing "]" after the IPv6 address"#),
        ("[nope]:9818", #"invalid listen address "[nope]:9818": "nope" is not an IPv6 address"#),
    ])
    func rejectsBadForms(text: String, message: String) {
        let error = #expect(throws: HTTPServerError.self) { try ListenAddress(parsing: text) }
        #expect(error?.description == message)
    }

    @Test func rejectsUnresolvableHost() {
        let error = #expect(throws: HTTPServerError.self) { try ListenAddress(parsing: "nosuch.invalid:9818") }
        guard case .invalidListenAddress(let address, let reason) = error else {
            Issue.record("expected invalidListenAddress, got \(String(describing: error))")
            return
        }
        #expect(address == "nosuch.invalid:9818")
        // The tail is gai_strerror's text, which depends on the resolver ("Name or service not known", ...).
        #expect(reason.hasPrefix(#"cannot resolve host "nosuch.invalid": "#))
    }
}
