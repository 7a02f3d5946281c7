/// Immutable bytes in memory of their own, which any number of responses send without copying them: a
/// rendered `/metrics` page (33 MB at 5,000 targets) goes to libmicrohttpd by reference, not once per scrape.
///
/// A response being sent holds a retained reference (released by libmicrohttpd's free callback), so the page a
/// refresh replaced meanwhile stays valid until the last response sending it is done.
///
/// `@unchecked Sendable`: the memory is written once, in `init`, and only read afterwards.
public final class SharedBytes: @unchecked Sendable {
    private let memory: UnsafeMutableRawBufferPointer
    public let count: Int

    public init(_ bytes: [UInt8]) {
        let memory = UnsafeMutableRawBufferPointer.allocate(byteCount: max(bytes.count, 1), alignment: 1)
        bytes.withUnsafeBytes { memory.copyMemory(from: $0) }
        self.memory = memory
        count = bytes.count
    }

    deinit { memory.deallocate() }

    /// The start of the bytes, valid for as long as this object lives.
    var baseAddress: UnsafeRawPointer { UnsafeRawPointer(memory.baseAddress!) }

    /// Calls `body` with the bytes, valid only inside it.
    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: memory.baseAddress, count: count))
    }

    /// A copy, as an array.
    public var bytes: [UInt8] { Array(UnsafeRawBufferPointer(start: memory.baseAddress, count: count)) }
}
