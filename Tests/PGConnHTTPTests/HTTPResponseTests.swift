import Testing

@testable import PGConnHTTP

@Suite struct HTTPResponseTests {
    @Test func textHelperSetsContentType() {
        let response = HTTPResponse.text("hi\n", status: 503)
        #expect(response.status == 503)
        #expect(response.header("content-type") == "text/plain; charset=utf-8")
        #expect(response.body == Array("hi\n".utf8))
    }

    @Test func htmlAndJSONHelpersSetContentType() {
        #expect(HTTPResponse.html("<p>").header("Content-Type") == "text/html; charset=utf-8")
        #expect(HTTPResponse.json("{}").header("Content-Type") == "application/json")
        #expect(HTTPResponse.json("{}").status == 200)
    }
}
