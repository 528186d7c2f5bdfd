#!/usr/bin/env bash
# Builds and runs the loader fuzz target (Tests/fuzz/LoaderFuzz.swift) with libFuzzer and
# AddressSanitizer: the engine's sources and the target compiled as one module.
# Usage: Tests/fuzz/run.sh SECONDS [extra libFuzzer flags...]
#   make fuzz        a long run (FUZZ_SECONDS, default 1800)
#   make test-fuzz   the short run of `make test` (60 s)
# The generated corpus goes to .build-fuzz/corpus (not committed); the seeds are Tests/fuzz/corpus.
# Limits: inputs up to 64 KiB, no single allocation above 256 MiB (-malloc_limit_mb), resident
# memory below 2 GiB (-rss_limit_mb), no input slower than 10 s (-timeout).
set -euo pipefail
cd "$(dirname "$0")/../.."
SECONDS_TO_RUN=${1:-60}; shift || true
SWIFTC=${SWIFTC:-swiftc}
OUT=.build-fuzz
mkdir -p "$OUT/corpus" "$OUT/artifacts"
BIN="$OUT/loader-fuzz"
SOURCES=$(find Sources/DPO -name '*.swift' | sort)
# The engine's C target (Sources/CBF16, the bf16 GEMM) as objects plus a module map for swiftc.
# The toolchain's clang, whose AddressSanitizer runtime is the one swiftc links.
FUZZ_CC=${FUZZ_CC:-$(dirname "$(command -v "$SWIFTC")")/clang}
if [ ! -x "$BIN" ] || [ -n "$(find Sources/DPO Sources/CBF16 Tests/fuzz/LoaderFuzz.swift -newer "$BIN" \( -name '*.swift' -o -name '*.c' -o -name '*.h' \) | head -1)" ]; then
    echo "== building $BIN (swiftc -sanitize=fuzzer,address)"
    mkdir -p "$OUT/cbf16"
    printf 'module CBF16 {\n    header "%s/Sources/CBF16/include/CBF16.h"\n    export *\n}\n' "$PWD" >"$OUT/cbf16/module.modulemap"
    OBJECTS=()
    for c in Sources/CBF16/*.c; do
        "$FUZZ_CC" -O2 -fsanitize=address -ISources/CBF16/include -c "$c" -o "$OUT/cbf16/$(basename "$c" .c).o" >>"$OUT/build.log" 2>&1 || {
            cat "$OUT/build.log" >&2; echo "fuzz: FAILED to build $c" >&2; exit 1; }
        OBJECTS+=("$OUT/cbf16/$(basename "$c" .c).o")
    done
    # shellcheck disable=SC2086
    "$SWIFTC" -O -parse-as-library -module-name DPO -sanitize=fuzzer,address -swift-version 5 \
        -I Sources/COpenBLAS -I "$OUT/cbf16" $(pkg-config --cflags-only-I openblas | sed 's/-I/-Xcc -I/g') \
        $(pkg-config --libs openblas) $SOURCES Tests/fuzz/LoaderFuzz.swift "${OBJECTS[@]}" -o "$BIN" >"$OUT/build.log" 2>&1 || {
        cat "$OUT/build.log" >&2; echo "fuzz: FAILED to build the target" >&2; exit 1; }
fi
echo "== fuzzing the model-folder and GGUF loaders for $SECONDS_TO_RUN s"
# One thread for OpenBLAS and the engine (the target sets it): the fuzzer is the parallelism.
status=0
OPENBLAS_NUM_THREADS=1 ASAN_OPTIONS=detect_leaks=0:allocator_may_return_null=1 \
    "$BIN" "$OUT/corpus" Tests/fuzz/corpus -max_total_time="$SECONDS_TO_RUN" -max_len=65536 \
    -malloc_limit_mb=256 -rss_limit_mb=2048 -timeout=10 -artifact_prefix="$OUT/artifacts/" \
    -print_final_stats=1 "$@" >"$OUT/last-run.log" 2>&1 || status=$?
grep -E '^#[0-9]+ +(INITED|DONE)|ERROR|SUMMARY' "$OUT/last-run.log" | head -20 || true
if [ "$status" -ne 0 ]; then
    tail -40 "$OUT/last-run.log" >&2
    echo "fuzz: FAILED (exit $status): see $OUT/last-run.log and $OUT/artifacts/" >&2
    exit 1
fi
grep -E 'stat::number_of_executed_units|stat::peak_rss_mb' "$OUT/last-run.log" | sed 's/^/  /'
echo "fuzz: passed (no crash, hang, sanitizer report or oversized allocation)"
