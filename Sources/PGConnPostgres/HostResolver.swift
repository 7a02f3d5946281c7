import Foundation
import Glibc
import PGConnCore

/// Host-name lookups for libpq, done before the connect on a worker thread so the I/O thread never calls
/// `getaddrinfo`.
///
/// libpq resolves names synchronously inside `PQconnectStartParams`/`PQconnectPoll`; a slow or dead DNS
/// server would stall every target. The monitor resolves first (on its lookup ``WorkerPool``) and hands libpq
/// numeric `hostaddr` values, keeping `host` for TLS verification and `pg_hba.conf`.
///
/// Each name gets its first address; libpq's own fallback over several addresses of one name is given up for
/// this (a DSN can still list several hosts).
enum HostResolver {
    /// Resolves every entry of `hosts` with `lookUp`: one `hostaddr` entry per host, or the first failure.
    static func resolve(
        _ hosts: [String], with lookUp: (String) -> Result<String, Failure>
    ) -> Result<String, Failure> {
        var addresses: [String] = []
        for host in hosts {
            switch needsLookup(host) ? lookUp(host) : .success(isNumeric(host) ? host : "") {
            case .success(let address): addresses.append(address)
            case .failure(let failure): return .failure(failure)
            }
        }
        return .success(addresses.joined(separator: ","))
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

    /// Which hosts of `dsn` need a lookup before libpq may connect, from the keywords libpq will really use
    /// (the DSN's, then `PGHOST`/`PGHOSTADDR`): `nil` when none do (numeric hosts, socket directories, or a
    /// `hostaddr` set already).
    static func hostsNeedingLookup(dsn: String) -> [String]? {
        hostsNeedingLookup(values: DSNParser.effectiveValues(of: dsn))
    }

    static func hostsNeedingLookup(values: [String: String]) -> [String]? {
        if let hostaddr = values["hostaddr"], !hostaddr.isEmpty { return nil }
        guard let host = values["host"], !host.isEmpty else { return nil }
        let hosts = host.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        return hosts.contains(where: needsLookup) ? hosts : nil
    }

    private static func needsLookup(_ host: String) -> Bool {
        !host.isEmpty && !host.hasPrefix("/") && !host.hasPrefix("@") && !isNumeric(host)
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
