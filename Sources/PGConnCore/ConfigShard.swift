/// One replica's share of the configured targets (`--config.shard=<index>/<count>`), for a fleet too large for
/// one process: every replica reads the same config file and watches the targets whose name hashes to its
/// index, so each target has exactly one session in the fleet and Prometheus simply scrapes every replica.
///
/// The hash is 64-bit FNV-1a over the name's UTF-8 bytes, modulo `count`: stable across versions and machines,
/// and easy to compute elsewhere (docs/scaling.md). Adding a replica moves about 1/count of the targets.
public struct ConfigShard: Sendable, Equatable, CustomStringConvertible {
    public let index: Int
    public let count: Int

    public init?(index: Int, count: Int) {
        guard count >= 1, (0..<count).contains(index) else { return nil }
        self.index = index
        self.count = count
    }

    /// `<index>/<count>`, 0-based: `0/3`, `1/3`, `2/3` (a StatefulSet's pod ordinal is the index).
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let index = Int(parts[0]), let count = Int(parts[1]), count <= 10_000 else {
            return nil
        }
        self.init(index: index, count: count)
    }

    public var description: String { "\(index)/\(count)" }

    /// Whether the target named `name` belongs to this shard.
    public func contains(_ name: String) -> Bool {
        Int(Self.hash(name) % UInt64(count)) == index
    }

    /// 64-bit FNV-1a of the UTF-8 bytes.
    public static func hash(_ name: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in name.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }
}

extension ValidatedConfig {
    /// This config with only the shard's targets. The health policy keeps its meaning for them: its `targets`
    /// list keeps the shard's names, and `require: N` is capped at the targets the shard counts (else the
    /// replica could never be healthy). Modules stay: every replica answers `/probe` for them.
    public func sharded(_ shard: ConfigShard) -> ValidatedConfig {
        var config = self
        config.targets = targets.filter { shard.contains($0.name) }
        if let names = health.targets { config.health.targets = names.filter { shard.contains($0) } }
        if case .atLeast(let required) = health.require {
            let counted = config.health.targets?.count ?? config.targets.count
            config.health.require = .atLeast(max(1, min(required, counted)))
        }
        return config
    }
}
