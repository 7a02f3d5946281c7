import Foundation
import PGConnSync
import Synchronization
import Testing

@testable import PGConnLog

/// The log writer on real pipes: lines in order, a full queue drops and counts, a broken or stuck pipe never
/// traps and never holds `close` past its timeout.
@Suite struct LogWriterTests {
    /// A pipe whose ends the test closes itself (the writer never closes its descriptor).
    final class TestPipe {
        let read: Int32
        let write: Int32
        private var open: Set<Int32>

        init() throws {
            var fds: [Int32] = [0, 0]
            guard pipe(&fds) == 0 else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
            (read, write) = (fds[0], fds[1])
            open = [read, write]
        }

        func close(_ fd: Int32) {
            if open.remove(fd) != nil { _ = Glibc.close(fd) }
        }

        deinit { for fd in open { _ = Glibc.close(fd) } }

        /// Writes into the pipe until it holds its whole capacity, so the next write(2) blocks. Returns the bytes.
        func fill() -> Int {
            let flags = fcntl(write, F_GETFL)
            _ = fcntl(write, F_SETFL, flags | O_NONBLOCK)
            defer { _ = fcntl(write, F_SETFL, flags) }
            var total = 0
            for chunk in [4096, 1] {
                let bytes = [UInt8](repeating: UInt8(ascii: "x"), count: chunk)
                while true {
                    let written = Glibc.write(write, bytes, chunk)
                    guard written > 0 else { break }
                    total += written
                }
            }
            return total
        }

        /// Reads until end of file (every write end closed) on a thread of its own; `wait()` returns the bytes.
        func readToEnd() -> @Sendable () -> [UInt8] {
            let result = Lock<[UInt8]?>(nil)
            let done = DispatchSemaphore(value: 0)
            let fd = read
            Thread {
                var all: [UInt8] = []
                var buffer = [UInt8](repeating: 0, count: 65536)
                while true {
                    let count = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
                    if count < 0, errno == EINTR { continue }
                    guard count > 0 else { break }
                    all += buffer[..<count]
                }
                result.withLock { $0 = all }
                done.signal()
            }.start()
            return {
                done.wait()
                return result.withLock { $0 ?? [] }
            }
        }
    }

    /// Counts what the writer reports as dropped.
    final class DropCount: Sendable {
        private let count = Atomic<Int>(0)
        var value: Int { count.load(ordering: .relaxed) }
        func add(_ n: Int) { count.add(n, ordering: .relaxed) }
    }

    /// Polls `condition` every millisecond until it holds or `timeout` passes.
    func eventually(timeout: Duration = .seconds(5), _ condition: () -> Bool) -> Bool {
        let deadline = ContinuousClock.now + timeout
        while !condition() {
            if ContinuousClock.now >= deadline { return false }
            usleep(1000)
        }
        return true
    }

    @Test func linesArriveInOrderWithTheirNewlinesAndNothingIsDropped() throws {
        let pipe = try TestPipe()
        let drops = DropCount()
        let writer = LogWriter(fileDescriptor: pipe.write, capacity: 100_000, onDrop: drops.add)
        let output = pipe.readToEnd()
        let lines = (0..<20_000).map { "line \($0) ts=2026-11-28T07:00:00.123Z level=info msg=\"state changed\"" }
        for line in lines { writer.write(line) }
        let long = String(repeating: "y", count: 1 << 20)  // Larger than a pipe: written in several parts.
        writer.write(long)
        #expect(writer.close(timeout: .seconds(10)))
        pipe.close(pipe.write)
        let text = String(decoding: output(), as: UTF8.self)
        #expect(text == (lines + [long]).map { $0 + "\n" }.joined())
        #expect(drops.value == 0)
    }

    @Test func aFullQueueDropsNewLinesAndCountsThemWithoutBlocking() throws {
        let pipe = try TestPipe()
        let filler = pipe.fill()
        let drops = DropCount()
        let writer = LogWriter(fileDescriptor: pipe.write, capacity: 8, onDrop: drops.add)
        writer.write("first")
        // The writer takes "first" off the queue and blocks in write(2): the pipe is full.
        #expect(eventually { writer.pendingLines == 0 })

        let clock = ContinuousClock()
        let start = clock.now
        for index in 0..<100 { writer.write("line \(index)") }
        let elapsed = clock.now - start
        #expect(elapsed < .seconds(1), "write(_:) must not wait for the file descriptor (took \(elapsed))")
        #expect(writer.pendingLines == 8)
        #expect(drops.value == 92, "a full queue drops the new line")

        let output = pipe.readToEnd()
        #expect(writer.close(timeout: .seconds(5)), "the queue drains once the pipe is read")
        writer.write("after close")
        #expect(drops.value == 93, "a closed writer drops")
        pipe.close(pipe.write)
        let bytes = output()
        #expect(bytes.count > filler)
        let text = String(decoding: bytes.dropFirst(filler), as: UTF8.self)
        #expect(text == (["first"] + (0..<8).map { "line \($0)" }).map { $0 + "\n" }.joined(), "oldest kept, in order")
    }

    @Test func aPipeWithoutReaderNeitherTrapsNorBlocksAndCountsEveryLine() throws {
        let pipe = try TestPipe()
        pipe.close(pipe.read)
        let drops = DropCount()
        let writer = LogWriter(fileDescriptor: pipe.write, capacity: 16, onDrop: drops.add)
        for index in 0..<10 { writer.write("line \(index)") }
        #expect(writer.close(timeout: .seconds(5)))
        #expect(drops.value == 10, "each EPIPE is a line not written")
    }

    @Test func aBadDescriptorIsCountedNotFatal() {
        // -1, not a closed descriptor: a parallel test could reuse a closed one's number.
        let drops = DropCount()
        let writer = LogWriter(fileDescriptor: -1, capacity: 16, onDrop: drops.add)
        writer.write("nowhere")
        #expect(writer.close(timeout: .seconds(5)))
        #expect(drops.value == 1)
        #expect(!LogWriter.writeAll(Array("direct\n".utf8), to: -1))
    }

    @Test func closeGivesUpAfterItsTimeoutWhenThePipeIsStuck() throws {
        let pipe = try TestPipe()
        _ = pipe.fill()
        let writer = LogWriter(fileDescriptor: pipe.write, capacity: 16)
        writer.write("stuck")
        writer.write("behind")
        let clock = ContinuousClock()
        let start = clock.now
        #expect(!writer.close(timeout: .milliseconds(200)))
        let waited = clock.now - start
        #expect(waited >= .milliseconds(200) && waited < .seconds(2), "waited \(waited)")
        // Release the thread blocked in write(2): without a reader it gets EPIPE (SIGPIPE is blocked there).
        pipe.close(pipe.read)
        #expect(writer.close(timeout: .seconds(5)), "finishes once the write fails")
    }

    @Test func closeIsQuickWhenNothingIsQueued() {
        let writer = LogWriter(fileDescriptor: STDERR_FILENO)
        let clock = ContinuousClock()
        let start = clock.now
        #expect(writer.close(timeout: .seconds(5)))
        #expect(writer.close(timeout: .seconds(5)), "a second close returns at once")
        #expect(clock.now - start < .seconds(1))
    }
}
