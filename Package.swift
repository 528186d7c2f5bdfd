// swift-tools-version:6.0
// swift-dpo is licensed under the Apache License, Version 2.0: see LICENSE at the repository root.
import PackageDescription

let package = Package(
    name: "swift-dpo",
    products: [
        .library(name: "DPO", targets: ["DPO"]),
        .executable(name: "dpo", targets: ["dpo-cli"]),
        // The C library (include/dpo.h): libCDPO.so, which `make build` copies to libdpo.so (its
        // soname; the product name `dpo` is taken by the command). Self-contained, exports only `dpo_*`.
        .library(name: "CDPO", type: .dynamic, targets: ["CDPO"]),
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
        // bf16 matrix products (C): AVX512-BF16 micro-kernels behind runtime CPU detection; the
        // kernels alone are compiled for AVX-512 (function target attributes), the rest is portable.
        // DWARF 4: valgrind 3.19 (Tests/c/run.sh) cannot read clang's default DWARF 5.
        .target(name: "CBF16", cSettings: [.unsafeFlags(["-gdwarf-4"])]),
        // The engine. No Foundation: it links statically into a self-contained libdpo.so.
        .target(
            name: "DPO",
            dependencies: ["COpenBLAS", "CBF16"]
        ),
        // The `dpo` command line: demo, sft, train, eval, generate, bench.
        .executableTarget(
            name: "dpo-cli",
            dependencies: ["DPO", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // include/dpo.h as a Clang module, so the exports use the header's own struct layouts.
        .systemLibrary(name: "CDPOHeader", path: "Sources/CDPOHeader"),
        // The C ABI: @_cdecl exports over the engine. Linked with the Swift runtime statically and a
        // version script that keeps every symbol but `dpo_*` local, so hosts need no toolchain
        // (lld: gold would leave local Swift symbols in the dynamic symbol table).
        .target(
            name: "CDPO",
            dependencies: ["DPO", "CDPOHeader"],
            exclude: ["exports.map"],
            linkerSettings: [
                .unsafeFlags(["-static-stdlib", "-use-ld=lld", "-Xlinker", "-soname=libdpo.so",
                              "-Xlinker", "--version-script=\(Context.packageDirectory)/Sources/CDPO/exports.map"]),
            ]
        ),
        // README's Swift example (Tests/cli/run.sh runs it and compares it with the C and Python ones).
        .executableTarget(name: "train-example", dependencies: ["DPO"], path: "examples/swift"),
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
