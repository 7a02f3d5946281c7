// swift-tools-version:6.2
import PackageDescription

/// Settings shared by every Swift target.
let swiftSettings: [SwiftSetting] = [
    // SE-0335: spell out `any` for existentials.
    .enableUpcomingFeature("ExistentialAny"),
    // SE-0409: imports are internal unless marked public, so a C module never leaks past its one importer.
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let package = Package(
    name: "pgconn_exporter",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "pgconn_exporter", targets: ["pgconn_exporter"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.0.0"),
    ],
    targets: [
        // C boundaries: one system library each, imported by exactly one Swift module.
        // libpq and the OpenSSL it is built on (the server certificate of a TLS session).
        .systemLibrary(name: "CLibPQ", pkgConfig: "libpq", providers: [.apt(["libpq-dev", "libssl-dev"])]),
        // libmicrohttpd's HTTPS is GnuTLS; the module also reaches GnuTLS for certificates and client checks.
        .systemLibrary(
            name: "CMicroHTTPD", pkgConfig: "libmicrohttpd",
            providers: [.apt(["libmicrohttpd-dev", "libgnutls28-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        // libxcrypt's crypt_r, for the bcrypt hashes of basic-auth users.
        .systemLibrary(name: "CCrypt", pkgConfig: "libcrypt", providers: [.apt(["libcrypt-dev"])]),
        // epoll and timerfd, which Glibc does not expose.
        .systemLibrary(name: "CLinux"),

        // The lock type: Synchronization.Mutex, or a pthread mutex in ThreadSanitizer builds (-DPGCONN_TSAN).
        .target(name: "PGConnSync", swiftSettings: swiftSettings),
        // Pure logic: no C, no I/O.
        .target(
            name: "PGConnCore",
            dependencies: ["PGConnSync", .product(name: "Yams", package: "Yams")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "PGConnPostgres",
            dependencies: [
                "CLibPQ", "CLinux", "PGConnCore", "PGConnSync", .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "PGConnHTTP",
            dependencies: ["CMicroHTTPD", "CZlib", "CCrypt", "PGConnCore", "PGConnSync"],
            swiftSettings: swiftSettings
        ),
        // The log line writer thread: the executable's only I/O on stderr, in a module so tests can reach it.
        .target(name: "PGConnLog", dependencies: ["CLinux", "PGConnSync"], swiftSettings: swiftSettings),
        .executableTarget(
            name: "pgconn_exporter",
            dependencies: [
                "CLinux", "PGConnCore", "PGConnPostgres", "PGConnHTTP", "PGConnLog", "PGConnSync",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),

        .testTarget(
            name: "PGConnCoreTests",
            dependencies: ["PGConnCore", "PGConnSync"],
            resources: [.copy("Fixtures")],
            swiftSettings: swiftSettings
        ),
        // A scripted server behind the monitor's connection seam, for tests without PostgreSQL.
        .target(
            name: "PGConnTestSupport", dependencies: ["PGConnPostgres", "PGConnCore", "PGConnSync"],
            path: "Tests/PGConnTestSupport",
            swiftSettings: swiftSettings),
        .testTarget(
            name: "PGConnPostgresTests",
            dependencies: [
                "PGConnPostgres", "PGConnCore", "PGConnSync", "PGConnTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings),
        .testTarget(name: "PGConnLogTests", dependencies: ["PGConnLog", "PGConnSync"], swiftSettings: swiftSettings),
        .testTarget(
            name: "PGConnHTTPTests", dependencies: ["PGConnHTTP", "PGConnCore", "PGConnSync", "PGConnTestSupport"],
            swiftSettings: swiftSettings),
        // Fuzz targets (Tests/Fuzz): libFuzzer's entry point in a `--sanitize=fuzzer -DPGCONN_FUZZ` build
        // (`make fuzz`), else a driver that replays the seed corpora.
        .target(
            name: "PGConnFuzzTargets", dependencies: ["PGConnCore", "PGConnHTTP", "PGConnPostgres"],
            path: "Tests/Fuzz/Targets", swiftSettings: swiftSettings),
        .executableTarget(
            name: "pgconn-fuzz", dependencies: ["PGConnFuzzTargets"], path: "Tests/Fuzz/Driver",
            swiftSettings: swiftSettings),
        // Needs a real PostgreSQL (started by the tests themselves) and the built executable.
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "PGConnCore", "PGConnPostgres", "PGConnHTTP", "PGConnSync", "PGConnTestSupport", "PGConnFuzzTargets",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
