import CLinux
import Glibc

/// An epoll instance plus an eventfd to wake it from other threads.
///
/// Owned by the monitor's I/O thread; only ``wake()`` may be called from elsewhere (an eventfd write is
/// thread-safe). Registrations carry a 64-bit token chosen by the caller.
final class Epoll {
    struct Interest: OptionSet {
        let rawValue: UInt32
        static let read = Interest(rawValue: EPOLLIN.rawValue)
        static let write = Interest(rawValue: EPOLLOUT.rawValue)
    }

    struct Event {
        var token: UInt64
        var readable: Bool
        var writable: Bool
        /// Hang-up or error: the socket is done; reading it tells why.
        var hangup: Bool
    }

    /// The token reported for the wake-up eventfd.
    static let wakeToken = UInt64.max

    private let fd: Int32
    private let wakeFD: Int32
    private var buffer: [epoll_event]

    /// `maxEvents` bounds the work between two looks at the timers: the loop handles at most that many ready
    /// sockets a turn (level-triggered, so the rest are reported again by the next wait). In a storm of
    /// thousands of disconnects each costs some tens of microseconds; 64 of them keep a turn near a few ms.
    init(maxEvents: Int = 64) throws(SystemError) {
        fd = epoll_create1(Int32(EPOLL_CLOEXEC))
        guard fd >= 0 else { throw SystemError("epoll_create1") }
        wakeFD = eventfd(0, Int32(EFD_NONBLOCK | EFD_CLOEXEC))
        guard wakeFD >= 0 else {
            let error = SystemError("eventfd")
            Glibc.close(fd)
            throw error
        }
        buffer = Array(repeating: epoll_event(), count: maxEvents)
        _ = control(EPOLL_CTL_ADD, wakeFD, .read, token: Self.wakeToken)
    }

    deinit {
        Glibc.close(wakeFD)
        Glibc.close(fd)
    }

    /// Registers `socket`, or changes its interest if it is registered already.
    func watch(_ socket: Int32, _ interest: Interest, token: UInt64) {
        if control(EPOLL_CTL_MOD, socket, interest, token: token) == ENOENT {
            _ = control(EPOLL_CTL_ADD, socket, interest, token: token)
        }
    }

    /// Adds a socket that is known not to be registered.
    func add(_ socket: Int32, _ interest: Interest, token: UInt64) {
        if control(EPOLL_CTL_ADD, socket, interest, token: token) == EEXIST {
            _ = control(EPOLL_CTL_MOD, socket, interest, token: token)
        }
    }

    /// Stops watching `socket`. Harmless if the socket was already closed (the kernel dropped it then).
    func unwatch(_ socket: Int32) {
        guard socket >= 0 else { return }
        _ = pgconn_epoll_ctl(fd, EPOLL_CTL_DEL, socket, 0, 0)
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) and returns the events. EINTR returns no events.
    func wait(timeoutMilliseconds: Int32) -> [Event] {
        let count = buffer.withUnsafeMutableBufferPointer { events in
            epoll_wait(fd, events.baseAddress, Int32(events.count), timeoutMilliseconds)
        }
        guard count > 0 else { return [] }
        var events: [Event] = []
        events.reserveCapacity(Int(count))
        for index in 0..<Int(count) {
            let event = buffer[index]
            let flags = event.events
            if event.data.u64 == Self.wakeToken {
                var value: UInt64 = 0
                _ = read(wakeFD, &value, 8)
            }
            events.append(
                Event(
                    token: event.data.u64,
                    readable: flags & EPOLLIN.rawValue != 0,
                    writable: flags & EPOLLOUT.rawValue != 0,
                    hangup: flags & (EPOLLHUP.rawValue | EPOLLERR.rawValue | EPOLLRDHUP.rawValue) != 0))
        }
        return events
    }

    /// Wakes a thread blocked in ``wait(timeoutMilliseconds:)``. Safe from any thread.
    func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    /// 0 or the call's errno (captured in C, see the shim).
    private func control(_ operation: Int32, _ socket: Int32, _ interest: Interest, token: UInt64) -> Int32 {
        pgconn_epoll_ctl(fd, operation, socket, interest.rawValue | EPOLLRDHUP.rawValue, token)
    }
}

/// A failed system call, with errno's text.
public struct SystemError: Error, CustomStringConvertible {
    public var call: String
    public var code: Int32

    init(_ call: String) {
        self.call = call
        self.code = errno
    }

    public var description: String { "\(call): \(String(cString: strerror(code)))" }
}
