import CZlib
import PGConnCore

/// gzip compression of response bodies (`Content-Encoding: gzip`), with the system's zlib.
///
/// Prometheus asks for gzip on every scrape; metrics text shrinks five to tenfold even at level 1, which
/// matters at thousands of targets. Level 1: most of the gain for a fraction of the CPU of the default level.
enum Gzip {
    /// The gzip stream of `bytes`, or nil if zlib fails (the caller then sends the body uncompressed).
    static func compress(_ bytes: [UInt8], level: Int32 = 1) -> [UInt8]? {
        bytes.withUnsafeBytes { compress($0, level: level) }
    }

    /// The gzip stream of `input`, or nil if zlib fails.
    ///
    /// The output grows as zlib fills it, from an eighth of the input: metrics text shrinks tenfold or more, and a
    /// buffer of `deflateBound` (a little over the input) would be 33 MB of zeroed memory for a 5,000-target page
    /// whose gzip is 2 MB.
    static func compress(_ input: UnsafeRawBufferPointer, level: Int32 = 1) -> [UInt8]? {
        var stream = z_stream()
        guard pgconn_deflate_init_gzip(&stream, level) == Z_OK else { return nil }
        defer { deflateEnd(&stream) }
        let bound = Int(deflateBound(&stream, uLong(input.count)))
        var output = [UInt8](repeating: 0, count: min(bound, input.count / 8 + 4096))
        var written = 0
        // zlib does not write through next_in; the mutable cast is how its API is declared.
        stream.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.avail_in = uInt(input.count)
        while true {
            if written == output.count {
                output.append(contentsOf: repeatElement(0, count: max(output.count, 4096)))
            }
            let status = output.withUnsafeMutableBufferPointer { out in
                stream.next_out = out.baseAddress! + written
                stream.avail_out = uInt(out.count - written)
                let status = deflate(&stream, Z_FINISH)
                written = out.count - Int(stream.avail_out)
                return status
            }
            if status == Z_STREAM_END { break }
            // Z_OK or Z_BUF_ERROR: the output is full; anything else is an error.
            guard status == Z_OK || status == Z_BUF_ERROR, written == output.count else { return nil }
        }
        output.removeSubrange(written...)
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
