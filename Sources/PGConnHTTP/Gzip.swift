import CZlib
import PGConnCore

/// gzip compression of response bodies (`Content-Encoding: gzip`), with the system's zlib.
///
/// Prometheus asks for gzip on every scrape; metrics text shrinks five to tenfold even at level 1, which
/// matters at thousands of targets. Level 1: most of the gain for a fraction of the CPU of the default level.
enum Gzip {
    /// The gzip stream of `bytes`, or nil if zlib fails (the caller then sends the body uncompressed).
    static func compress(_ bytes: [UInt8], level: Int32 = 1) -> [UInt8]? {
        var stream = z_stream()
        guard pgconn_deflate_init_gzip(&stream, level) == Z_OK else { return nil }
        defer { deflateEnd(&stream) }
        var output = [UInt8](repeating: 0, count: Int(deflateBound(&stream, uLong(bytes.count))))
        let status = bytes.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { out in
                // zlib does not write through next_in; the mutable cast is how its API is declared.
                stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress)
                stream.avail_in = uInt(input.count)
                stream.next_out = out.baseAddress
                stream.avail_out = uInt(out.count)
                return deflate(&stream, Z_FINISH)
            }
        }
        guard status == Z_STREAM_END else { return nil }
        output.removeSubrange(Int(stream.total_out)...)
        return output
    }

    /// Whether an `Accept-Encoding` header value admits gzip: `gzip` or `*` listed without `q=0`.
    static func isAccepted(by acceptEncoding: String?) -> Bool {
        guard let acceptEncoding else { return false }
        for item in acceptEncoding.split(separator: ",") {
            let parts = item.split(separator: ";").map { String($0).trimmingWhitespace().lowercased() }
            guard let coding = parts.first, coding == "gzip" || coding == "x-gzip" || coding == "*" else { continue }
            let refused = parts.dropFirst().contains { parameter in
                guard parameter.hasPrefix("q=") else { return false }
                return (Double(parameter.dropFirst(2)) ?? 1) == 0
            }
            if !refused { return true }
        }
        return false
    }
}
