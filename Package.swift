// swift-tools-version:6.2
import PackageDescription

import class Foundation.ProcessInfo

/// One set of Swift settings for every target of ours. CI sets `LLM_GATEWAY_WERROR=1`
/// so warnings fail the build there without breaking a newcomer's first build.
let swiftSettings: [SwiftSetting] = {
    var settings: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]
    if ProcessInfo.processInfo.environment["LLM_GATEWAY_WERROR"] == "1" {
        settings.append(.treatAllWarnings(as: .error))
    }
    return settings
}()

let package = Package(
    name: "llm-gateway",
    products: [
        .executable(name: "llm-gateway", targets: ["Supervisor"]),
        .executable(name: "llm-gateway-worker", targets: ["Worker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.0"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.0"),
    ],
    targets: [
        // Linux system libraries and the C calls Swift cannot make (variadic prctl, memfd).
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        .systemLibrary(name: "CLibcap", pkgConfig: "libcap", providers: [.apt(["libcap-dev"])]),
        .target(name: "CGatewayShims", cSettings: [.define("_GNU_SOURCE")]),

        // Redis's URL, parsed without NIO: the configuration (Shared) reads `REDIS_URL` with
        // it and the client (Redis) connects with it.
        .target(name: "RedisURLParsing", swiftSettings: swiftSettings),

        .target(
            name: "Shared",
            dependencies: [
                "CGatewayShims", "RedisURLParsing",
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "Supervisor",
            dependencies: [
                "Shared", "CSystemd", "CLibcap", "CGatewayShims",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            swiftSettings: swiftSettings
        ),
        // The HTTP/1.1 parser and head writer: NIO's types and no gateway code, so its tests,
        // sanitizer runs and fuzz target build without the rest. Generic over its heads and
        // called per byte from the Worker: cross-module optimization lets the Worker
        // specialize it as when they were one module.
        .target(
            name: "HTTP1",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Sources/Worker/HTTP",
            swiftSettings: swiftSettings + [.unsafeFlags(["-cross-module-optimization"], .when(configuration: .release))]
        ),
        .executableTarget(
            name: "Worker",
            dependencies: [
                "Shared", "CGatewayShims", "HTTP1", "Redis", "RedisLimits", "RedisURLParsing",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Atomics", package: "swift-atomics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            exclude: ["HTTP"],
            swiftSettings: swiftSettings
        ),

        // A small RESP2 client for the limits shared through Redis: one pipelined connection
        // per event loop, no gateway code, so its tests build without the rest.
        .target(
            name: "Redis",
            dependencies: [
                "RedisURLParsing",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
        // Per-key limits in Redis, for several gateway hosts: the GCRA scripts, and the pure
        // pieces around them (which store a request uses, the deny cache, the charge retries).
        .target(
            name: "RedisLimits",
            dependencies: [
                "Redis", "RedisURLParsing", "Shared",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),

        .target(
            name: "GatewayTestKit",
            dependencies: ["Shared"],
            path: "Tests/GatewayTestKit",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SharedTests", dependencies: ["Shared", "GatewayTestKit", "CGatewayShims", "RedisURLParsing"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "SupervisorTests",
            dependencies: ["Supervisor", "Shared", "GatewayTestKit"],
            exclude: ["Fixtures"],  // read by path (captured /metrics pages)
            swiftSettings: swiftSettings
        ),
        // Its SplitMix64.swift is a link to Shared's: these tests build without Shared.
        .testTarget(
            name: "HTTP1Tests",
            dependencies: [
                "HTTP1",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        // libFuzzer's entry for the parser (scripts/fuzz-http1); built plainly it replays
        // the files it is given. Not a product: nothing installs it.
        .target(name: "CLibFuzzer", path: "Tests/CLibFuzzer"),
        .executableTarget(
            name: "HTTP1Fuzz",
            dependencies: [
                "HTTP1", "CLibFuzzer",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            path: "Tests/HTTP1Fuzz",
            exclude: ["corpus", "http1.dict"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RedisTests",
            dependencies: [
                "Redis", "RedisURLParsing",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "RedisLimitsTests",
            dependencies: [
                "RedisLimits", "Redis", "RedisURLParsing", "Shared",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "WorkerTests",
            dependencies: [
                "Worker", "Shared", "GatewayTestKit", "HTTP1",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)

// `LLM_GATEWAY_HTTP1_ONLY=1`: only the HTTP/1.1 parser, its tests and its fuzz target, for
// scripts/test's sanitizer runs (scripts/fuzz-http1, the address-sanitized parser tests):
// NIO and the parser get built, not BoringSSL twice and the rest.
if ProcessInfo.processInfo.environment["LLM_GATEWAY_HTTP1_ONLY"] == "1" {
    package.products = []
    package.targets.removeAll { !["HTTP1", "HTTP1Tests", "HTTP1Fuzz", "CLibFuzzer"].contains($0.name) }
    package.dependencies.removeAll {
        guard case .sourceControl(_, let location, _) = $0.kind else { return true }
        return !location.hasSuffix("/swift-nio")
    }
}
