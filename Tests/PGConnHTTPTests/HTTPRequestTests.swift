import Testing

@testable import PGConnHTTP

@Suite struct HTTPRequestTests {
    @Test func lowercasesAndJoinsHeaderNames() {
        let request = HTTPRequest(path: "/", headers: ["Accept": "text/plain", "X-Test": "1", "x-test": "2"])
        #expect(request.headers["accept"] == "text/plain")
        #expect(request.header("ACCEPT") == "text/plain")
        #expect(request.header("X-Test") == "1, 2" || request.header("X-Test") == "2, 1")
    }
}
