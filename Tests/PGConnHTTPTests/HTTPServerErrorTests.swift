import Testing

@testable import PGConnHTTP

@Suite struct HTTPServerErrorTests {
    @Test func describesInvalidAddress() {
        let error = HTTPServerError.invalidListenAddress(":abc", reason: #"port "abc" is not a number"#)
        #expect(error.description == #"invalid listen address ":abc": port "abc" is not a number"#)
    }

    @Test func describesBindFailure() {
        let error = HTTPServerError.bindFailed("127.0.0.1:9818", reason: "Address already in use")
        #expect(error.description == #"cannot listen on "127.0.0.1:9818": Address already in use"#)
    }
}
