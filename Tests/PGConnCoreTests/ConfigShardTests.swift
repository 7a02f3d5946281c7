import Testing

@testable import PGConnCore

/// `--config.shard`: every target in exactly one shard, by a hash others can compute.
struct ConfigShardTests {
    @Test func parsing() {
        #expect(ConfigShard(parsing: "0/3") == ConfigShard(index: 0, count: 3))
        #expect(ConfigShard(parsing: "2/3")?.description == "2/3")
        for bad in ["3/3", "-1/3", "1/0", "1", "a/b", "1/3/4", "", "/3", "1/"] {
            #expect(ConfigShard(parsing: bad) == nil, "\(bad)")
        }
    }

    @Test func theHashIsFNV1a64() {
        #expect(ConfigShard.hash("") == 0xcbf2_9ce4_8422_2325)
        #expect(ConfigShard.hash("a") == 0xaf63_dc4c_8601_ec8c)
        #expect(ConfigShard.hash("foobar") == 0x8594_4171_f739_67e8)
    }

    @Test func everyTargetIsInExactlyOneShardAndTheSharesAreEven() {
        let names = (0..<3000).map { "db-\($0).prod" }
        let shards = (0..<3).map { ConfigShard(index: $0, count: 3)! }
        for name in names { #expect(shards.filter { $0.contains(name) }.count == 1) }
        let sizes = shards.map { shard in names.count { shard.contains($0) } }
        #expect(sizes.allSatisfy { (850...1150).contains($0) }, "\(sizes)")
        #expect(names.allSatisfy { ConfigShard(index: 0, count: 1)!.contains($0) })
    }

    @Test func aShardKeepsItsTargetsAndAHealthPolicyThatCanHold() throws {
        let yaml = """
            health: {require: 3, targets: [a, b, c, d]}
            targets:
              - {name: a, dsn: "host=x"}
              - {name: b, dsn: "host=x"}
              - {name: c, dsn: "host=x"}
              - {name: d, dsn: "host=x"}
            modules:
              m: {allow: ["*"]}
            """
        let summary = DSNSummary(host: "x", port: "5432", database: "d", user: "u", sslmode: "prefer")
        let config = try ConfigLoader.load(yaml: yaml, parseDSN: { _ in .success(summary) }).get()
        var seen: [String] = []
        for index in 0..<2 {
            let shard = ConfigShard(index: index, count: 2)!
            let part = config.sharded(shard)
            #expect(part.targets.allSatisfy { shard.contains($0.name) })
            #expect(part.health.targets == part.targets.map(\.name))
            #expect(part.health.require == .atLeast(max(1, min(3, part.targets.count))))
            #expect(part.modules.map(\.name) == ["m"])
            seen += part.targets.map(\.name)
        }
        #expect(seen.sorted() == ["a", "b", "c", "d"])
    }
}
