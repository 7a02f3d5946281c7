import Foundation

/// A listening TCP socket on 127.0.0.1 and a wake pipe, for one thread that `poll`s both and must be stoppable.
///
/// Another thread gets the polling thread out of `poll` with ``wake()``, never by closing a descriptor under it;
/// ``close()`` closes all three descriptors, and only once the polling thread has returned. Every descriptor is
/// close-on-exec, so child processes never inherit the listener.
struct WakeableListener: Sendable {
    /// The listening socket.
    let fd: Int32
    /// The port on 127.0.0.1 it listens on.
    let port: Int
    private let wakeRead: Int32
    private let wakeWrite: Int32

    init() throws {
        let (fd, port) = try SocketIO.listen()
        do {
            (wakeRead, wakeWrite) = try SocketIO.makeWakePipe()
        } catch {
            Glibc.close(fd)
            throw error
        }
        self.fd = fd
        self.port = port
    }

    /// The poll set to start from: the wake pipe at index 0, the listening socket at index 1, both for `POLLIN`.
    func pollSet() -> [pollfd] {
        [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0), pollfd(fd: fd, events: Int16(POLLIN), revents: 0)]
    }

    /// Makes the polling thread's `poll` return (index 0 readable).
    func wake() { SocketIO.wake(wakeWrite) }

    /// Empties the wake pipe, so that the next `poll` blocks again.
    func drainWakes() { SocketIO.drain(wakeRead) }

    /// Accepts one pending connection (see ``SocketIO/accept(_:)``).
    func accept() -> Int32? { SocketIO.accept(fd) }

    /// Closes the listening socket and the wake pipe. Call once, after the polling thread has returned.
    func close() {
        Glibc.close(fd)
        Glibc.close(wakeRead)
        Glibc.close(wakeWrite)
    }
}
