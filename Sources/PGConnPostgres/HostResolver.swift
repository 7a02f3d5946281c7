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
/// A name with several addresses is tried at each of them in turn, as libpq does when it resolves names itself:
/// the name is repeated in `host` once per address (``ResolvedHosts``), so TLS verification still sees the name.
enum HostResolver {
    /// At most this many addresses of one name are tried (each may cost a connect timeout's share).
    static let maximumAddressesPerName = 8

    /// Resolves every entry of `hosts` with `lookUp` (which answers a name's addresses, comma-separated): the
    /// `hostaddr` list libpq is given, and `host` and `port` lists expanded to match when a name gave several
    /// addresses; or the first failure.
    ///
    /// - Parameter ports: the DSN's `port` value; a list of one per host is expanded with the hosts.
    static func resolve(
        _ hosts: [String], ports: String? = nil, with lookUp: (String) -> Result<String, Failure>
    ) -> Result<ResolvedHosts, Failure> {
        var groups: [[String]] = []
        for host in hosts {
            switch needsLookup(host) ? lookUp(host) : .success(isNumeric(host) ? host : "") {
            case .success(let addresses):
                var seen = Set<String>()
                let unique = libpqList(addresses)
                    .filter { seen.insert($0).inserted }
                groups.append(Array(unique.prefix(maximumAddressesPerName)))
            case .failure(let failure): return .failure(failure)
            }
        }
        let hostaddr = groups.flatMap { $0 }.joined(separator: ",")
        guard groups.contains(where: { $0.count > 1 }) else { return .success(ResolvedHosts(hostaddr: hostaddr)) }
        let expandedHosts = zip(hosts, groups).flatMap { host, group in Array(repeating: host, count: group.count) }
        var expandedPorts: String?
        if let portList = ports.map(libpqList),
            portList.count == hosts.count, portList.count > 1
        {
            expandedPorts = zip(portList, groups).flatMap { port, group in Array(repeating: port, count: group.count) }
                .joined(separator: ",")
        }
        return .success(
            ResolvedHosts(hostaddr: hostaddr, host: expandedHosts.joined(separator: ","), port: expandedPorts))
    }

    /// `host`'s `hostaddr` entries, comma-separated: empty for a socket directory (no lookup), the host itself
    /// if numeric, else every address it resolves to, in the resolver's order.
    static func lookUp(_ host: String) -> Result<String, Failure> {
        if host.isEmpty || host.hasPrefix("/") || host.hasPrefix("@") || isNumeric(host) {
            return .success(numericOrEmpty(host))
        }
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
        var addresses: [String] = []
        var entry: UnsafeMutablePointer<addrinfo>? = first
        while let current = entry {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            let named = getnameinfo(
                current.pointee.ai_addr, current.pointee.ai_addrlen, &buffer, socklen_t(buffer.count), nil, 0,
                NI_NUMERICHOST)
            if named == 0 {
                let address = buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
                if !addresses.contains(address) { addresses.append(address) }
            }
            entry = current.pointee.ai_next
        }
        guard !addresses.isEmpty else {
            return .failure(Failure(reason: .dns, message: "could not format the addresses of \"\(host)\""))
        }
        return .success(addresses.joined(separator: ","))
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
        let hosts = libpqList(host)
        return hosts.contains(where: needsLookup) ? hosts : nil
    }

    /// The entries of a comma-separated `host`, `hostaddr` or `port` value, split as libpq splits them: at every
    /// comma byte. Splitting the `String` would miss a comma followed by a combining mark, which Swift counts as
    /// one character with it, and hand libpq lists of different lengths (found by `make fuzz`).
    static func libpqList(_ value: String) -> [String] {
        value.utf8.split(separator: UInt8(ascii: ","), omittingEmptySubsequences: false)
            .map { String(decoding: $0, as: UTF8.self) }
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

/// What a lookup gives libpq: `hostaddr`, and the `host` and `port` lists when a name had several addresses.
struct ResolvedHosts: Sendable, Equatable {
    /// One numeric address (or empty, for a socket directory) per connection libpq may try.
    var hostaddr: String
    /// The DSN's hosts repeated to match `hostaddr`; `nil` when every host had one address (the DSN's stand).
    var host: String?
    /// The DSN's per-host ports repeated the same way; `nil` when the DSN's `port` applies as it is.
    var port: String?

    /// The first address, when every entry belongs to one host (a name with several addresses): where the port
    /// check of a refused session goes. `nil` for several hosts.
    var singleHostAddress: String? {
        guard let host else { return hostaddr.contains(",") ? nil : hostaddr }
        let names = Set(HostResolver.libpqList(host))
        return names.count == 1 ? HostResolver.libpqList(hostaddr).first : nil
    }
}
