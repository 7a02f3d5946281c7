import Foundation
import Glibc
import PGConnCore

/// Resolves host names on a few worker threads, so the monitor's I/O thread never calls `getaddrinfo`.
///
/// libpq resolves names synchronously inside `PQconnectStartParams`/`PQconnectPoll`; a slow or dead DNS
/// server would stall every target. The monitor resolves first (here) and hands libpq numeric `hostaddr`
/// values, keeping `host` for TLS verification and `pg_hba.conf`. Results come back through `completion`
/// on a worker thread; the monitor forwards them to its loop.
///
/// Each name gets its first address; libpq's own fallback over several addresses of one name is given up for
/// this (a DSN can still list several hosts).
final class HostResolver: Sendable {
    private let queue: OperationQueue
    private let completion: @Sendable (UInt64, Result<[String], Failure>) -> Void

    init(workers: Int = 4, completion: @escaping @Sendable (UInt64, Result<[String], Failure>) -> Void) {
        queue = OperationQueue()
        queue.name = "pgconn-resolver"
        queue.maxConcurrentOperationCount = workers
        self.completion = completion
    }

    /// Resolves every entry of `hosts`; entries that need no lookup (empty, numeric) come back as they are.
    /// `completion` receives `ticket` and one `hostaddr` entry per host, or the first failure.
    func resolve(_ hosts: [String], ticket: UInt64) {
        let completion = self.completion
        queue.addOperation {
            var addresses: [String] = []
            for host in hosts {
                switch Self.lookUp(host) {
                case .success(let address):
                    addresses.append(address)
                case .failure(let failure):
                    completion(ticket, .failure(failure))
                    return
                }
            }
            completion(ticket, .success(addresses))
        }
    }

    /// Stops taking work; lookups already running finish on their own.
    func shutdown() {
        queue.cancelAllOperations()
    }

    /// One `hostaddr` entry for `host`: empty for a socket directory (no lookup), the host itself if numeric,
    /// else its first address.
    static func lookUp(_ host: String) -> Result<String, Failure> {
        if host.isEmpty || host.hasPrefix("/") || host.hasPrefix("@") || isNumeric(host) { return .success(numericOrEmpty(host)) }
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &result)
        guard status == 0, let first = result else {
            let reason = String(cString: gai_strerror(status))
            return .failure(
                Failure(reason: .dns, message: "could not translate host name \"\(host)\" to address: \(reason)"))
        }
        defer { freeaddrinfo(result) }
        var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        let named = getnameinfo(
            first.pointee.ai_addr, first.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0, NI_NUMERICHOST)
        guard named == 0 else {
            let reason = String(cString: gai_strerror(named))
            return .failure(Failure(reason: .dns, message: "could not format the address of \"\(host)\": \(reason)"))
        }
        return .success(String(cString: buffer))
    }

    /// Which hosts of `dsn` need a lookup before libpq may connect: `nil` when none do (numeric hosts, socket
    /// directories, or a DSN that sets `hostaddr` itself).
    static func hostsNeedingLookup(dsn: String) -> [String]? {
        guard let values = DSNParser.values(of: dsn) else { return nil }
        if let hostaddr = values["hostaddr"], !hostaddr.isEmpty { return nil }
        guard let host = values["host"], !host.isEmpty else { return nil }
        let hosts = host.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        let needsLookup = hosts.contains { !$0.isEmpty && !$0.hasPrefix("/") && !$0.hasPrefix("@") && !isNumeric($0) }
        return needsLookup ? hosts : nil
    }

    private static func numericOrEmpty(_ host: String) -> String {
        isNumeric(host) ? host : ""
    }

    static func isNumeric(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }
}
