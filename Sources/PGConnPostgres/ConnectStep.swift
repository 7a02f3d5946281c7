import PGConnCore
import Synchronization

/// One step of a connect (`PQconnectStartParams`, or one `PQconnectPoll`) running on a connect worker.
///
/// Connect steps cost CPU: SCRAM's PBKDF2 (4,096 HMAC-SHA-256 rounds in the client) and TLS handshakes run
/// inside `PQconnectPoll`, a few milliseconds each, and a start may read `~/.pgpass` or a service file. On the
/// I/O thread, a storm of logins (every target after a restart) delayed every other target's probes and
/// timers. So the loop hands each step to a worker and waits for its answer as it waits for a socket.
///
/// One owner at a time: while a step runs, the connection belongs to the worker (the loop has taken its socket
/// out of epoll and does not touch it); once the answer is in the loop's queue, it is the loop's again. A step
/// the loop gives up on (a connect deadline, a reload, a stop) is settled by whichever side comes second:
/// ``abandon()`` and ``finish()`` race on one atomic, and the loser closes the connection, so it is closed
/// exactly once and never while the other side uses it.
///
/// `@unchecked Sendable`: `connection` is written by the worker before ``finish()`` and read by the loop only
/// after it sees the answer (through the loop's command mutex) or after ``abandon()`` found the step answered.
final class ConnectStep: @unchecked Sendable {
    private enum State: UInt8 {
        case running = 0
        case answered = 1
        case abandoned = 2
    }

    /// The worker pool's ticket for this step.
    let ticket: UInt64
    /// The connection being connected: set by the worker for a start, given by the loop for a poll.
    private(set) var connection: (any DatabaseConnection)?
    private let state = Atomic<UInt8>(State.running.rawValue)

    init(ticket: UInt64, connection: (any DatabaseConnection)?) {
        self.ticket = ticket
        self.connection = connection
    }

    /// Worker side: runs the step and returns what libpq asks for next (`.wantWrite` after a start), or `nil`
    /// when the loop abandoned the step meanwhile (the connection is closed then, here).
    func run(starting start: (() -> Result<any DatabaseConnection, Failure>)?) -> ConnectPollStatus? {
        let status: ConnectPollStatus
        if let start {
            switch start() {
            case .success(let started):
                connection = started
                status = .wantWrite
            case .failure(let failure):
                status = .failed(failure)
            }
        } else if let connection {
            status = connection.poll()
        } else {
            status = .failed(Failure(reason: .other, message: "connection closed"))
        }
        guard finish() else {
            connection?.close()
            return nil
        }
        return status
    }

    /// Worker side: marks the step answered; false if the loop abandoned it first.
    private func finish() -> Bool {
        state.compareExchange(
            expected: State.running.rawValue, desired: State.answered.rawValue, ordering: .acquiringAndReleasing
        ).exchanged
    }

    /// Loop side: gives the step up. Returns the connection when the loop must close it (the worker has
    /// answered already, so it no longer touches it), `nil` when the worker will close it after its step.
    func abandon() -> (any DatabaseConnection)? {
        let exchanged = state.compareExchange(
            expected: State.running.rawValue, desired: State.abandoned.rawValue, ordering: .acquiringAndReleasing
        ).exchanged
        return exchanged ? nil : connection
    }
}
