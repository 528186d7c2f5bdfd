// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "swift-dpo",
    products: [
        .library(name: "DPO", targets: ["DPO"]),
        .executable(name: "dpo", targets: ["dpo-cli"]),
    ],
    dependencies: [
        // Only the command line uses it; the engine has no package dependencies.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    ],
    targets: [
        // System library: the CBLAS interface of OpenBLAS (Debian: libopenblas-dev).
        .systemLibrary(
            name: "COpenBLAS",
            pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]
        ),
        // The engine. No Foundation: it links statically into a self-contained libdpo.so.
        .target(
            name: "DPO",
            dependencies: ["COpenBLAS"]
        ),
        // The `dpo` command line: demo, sft, train, eval, generate, bench.
        .executableTarget(
            name: "dpo-cli",
            dependencies: ["DPO", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        .testTarget(
            name: "DPOTests",
            dependencies: ["DPO"],
            exclude: ["Fixtures"]
        ),
    ],
    // Swift 5 language mode: the kernels hand raw buffers to parallel loops, which Swift 6's strict
    // sendability checking would reject without adding any safety here.
    swiftLanguageModes: [.v5]
)
