// swift-tools-version: 6.1
import PackageDescription

// Dependencies point one way: strata-csi → CSIDriver → (CSIProto, AdminProto, Peering, BlockStore, NodeHost)
// → KernelFiles; Peering → (PeerProto, BlockStore);
// the `strata` admin CLI → AdminProto only (it talks to the driver's admin socket).
// BlockStore and NodeHost know nothing of gRPC, CSI or Kubernetes; Peering knows nothing of CSI.
let package = Package(
    name: "Strata",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "strata-csi", targets: ["strata-csi"]),
        .executable(name: "strata-bench", targets: ["strata-bench"]),
        .executable(name: "strata-fuse-keeper", targets: ["strata-fuse-keeper"]),
        .executable(name: "strata", targets: ["strata-cli"]),
        .library(name: "BlockStore", targets: ["BlockStore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/grpc/grpc-swift-2", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        // Already in the graph through grpc-swift-nio-transport; the peers' block wire's TLS.
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // Already in the graph through swift-certificates; SHA-256 of the peer protocol's chunks.
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    ],
    targets: [
        // Generated from proto/csi.proto by scripts/generate-proto.sh; never edited by hand.
        .target(
            name: "CSIProto",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // Generated from proto/peer.proto (the node-to-node protocol) by scripts/generate-proto.sh.
        .target(
            name: "PeerProto",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // Generated from proto/admin.proto by scripts/generate-proto.sh; never edited by hand.
        .target(
            name: "AdminProto",
            dependencies: [
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // The one reader of /proc and /sys (to the end of file; Foundation's stops at ~4 KiB of a
        // seq_file) and of the mount table: Glibc only, shared by the store, the node code and
        // the tests.
        .target(name: "KernelFiles"),
        // Open flags Swift's Glibc module leaves out (O_DIRECT is behind _GNU_SOURCE): a header only.
        .systemLibrary(name: "CGlibcFlags"),
        .target(
            name: "BlockStore",
            dependencies: [
                "KernelFiles", "CGlibcFlags",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Node to node: the peer directory, one pooled mutual-TLS client per peer, the layer
        // service and the replica fetcher. Over BlockStore and the peer protocol only: it knows
        // nothing of CSI (the driver adapts it through `PeerHost`).
        .target(
            name: "Peering",
            dependencies: [
                "BlockStore", "PeerProto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // libfuse3 (Debian: libfuse3-dev) for the FUSE export of staged volumes.
        .systemLibrary(name: "CFuse3", pkgConfig: "fuse3", providers: [.apt(["libfuse3-dev"])]),
        // The keeper's wire (SCM_RIGHTS over a Unix socket): Glibc only, shared by the keeper and
        // the driver.
        .target(name: "FuseKeeperProtocol"),
        // Holds the node plugin's /dev/fuse descriptors across its restarts; as few
        // dependencies as possible, since it is upgraded only with a node drain.
        .executableTarget(name: "strata-fuse-keeper", dependencies: ["FuseKeeperProtocol"]),
        .target(
            name: "NodeHost",
            dependencies: [
                "CFuse3", "KernelFiles",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Request validation and the CSIError it throws: CSIProto and GRPCCore only, so the fuzz
        // harnesses build without NIO and the transport.
        .target(
            name: "CSIValidation",
            dependencies: [
                "CSIProto",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
            ]
        ),
        .target(
            name: "CSIDriver",
            dependencies: [
                "CSIProto", "AdminProto", "PeerProto", "Peering", "CSIValidation", "BlockStore", "NodeHost", "FuseKeeperProtocol",
                "KernelFiles",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "strata-csi",
            dependencies: [
                "CSIDriver", "Peering",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The admin CLI (product `strata`): flags and printing; everything else is the driver's.
        .executableTarget(
            name: "strata-cli",
            dependencies: [
                "AdminProto",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "strata-bench",
            dependencies: [
                "BlockStore", "Peering", "PeerProto",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // libFuzzer harnesses: scripts/fuzz.sh builds them with -sanitize=fuzzer,address and
        // -DSTRATA_FUZZING; a plain build makes the same executable replay inputs.
        .executableTarget(
            name: "strata-fuzz",
            dependencies: [
                "BlockStore", "CSIValidation", "CSIProto",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The tests' one set of helpers: temporary directories, the seeded generator, the node
        // environment check, the external-tool runner, and where the repository and the built
        // binaries are. Mount tables are read through KernelFiles' `MountTable`, the product's own.
        .target(name: "StrataTestSupport", dependencies: ["KernelFiles"], path: "Tests/StrataTestSupport"),
        // In-memory exporter, attacher and mounter behind NodeHost's protocols, so that the node's
        // staging, recovery and restart logic runs in tests without root, FUSE or loop devices.
        .target(name: "NodeHostFakes", dependencies: ["NodeHost", "KernelFiles"], path: "Tests/NodeHostFakes"),
        .testTarget(
            name: "BlockStoreTests",
            dependencies: ["BlockStore", "StrataTestSupport", .product(name: "GRDB", package: "GRDB.swift")]
        ),
        .testTarget(name: "NodeHostTests", dependencies: ["NodeHost", "KernelFiles", "StrataTestSupport"]),
        .testTarget(name: "KernelFilesTests", dependencies: ["KernelFiles", "StrataTestSupport"]),
        .testTarget(
            name: "CSIDriverTests",
            dependencies: [
                "CSIDriver", "CSIProto", "AdminProto", "PeerProto", "Peering", "CSIValidation", "BlockStore", "FuseKeeperProtocol",
                "KernelFiles", "NodeHost", "NodeHostFakes", "StrataTestSupport",
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "GRPCInProcessTransport", package: "grpc-swift-2"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            exclude: ["Interop"]
        ),
        .testTarget(name: "DeployTests", dependencies: ["StrataTestSupport"], exclude: ["validate_manifests.py", "deploycheck"]),
    ]
)
