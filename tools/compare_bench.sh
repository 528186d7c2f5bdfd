#!/usr/bin/env bash
# Runs `dpo bench` (Swift) and tools/bench_torch.py (PyTorch eager) on the same DPO step, alternating,
# each run in a fresh process, and prints per shape the medians of both sides and their ratios.
#
# usage: tools/compare_bench.sh [options] [shape ...]        (shapes default: tiny smollm2-135m)
#   --rounds R        runs of each side per shape (default 3); the order alternates per round
#   --python PATH     python with torch + transformers (default $TORCH_PYTHON or .venv-tools/bin/python)
#   --pairs N, --prompt-length N, --completion-length N, --reference model|precomputed,
#   --steps N, --warmup N, --threads N    passed to both sides
#   --packing shared|plain    passed to dpo bench only (PyTorch always does TRL's plain batch;
#                     plain is the same work on both sides)
#   --bf16            bf16 on both sides: `dpo bench --bf16` (bf16 products) and PyTorch under
#                     torch.autocast("cpu", dtype=torch.bfloat16) (or TRL's bf16=True with --trl)
#   --trl             the PyTorch side is TRL's own DPOTrainer with its defaults (bench_torch.py --trl)
# $DPO overrides the Swift binary (default .build/release/dpo; build it with `make build`).
#
# Ratios are swift/torch, the median of the per-round ratios (each round's two runs are side by
# side, which cancels most of a noisy machine's drift). Throughput > 1 and memory < 1 favour Swift.
# Run it on a quiet machine: next to another multi-threaded job PyTorch's OpenMP threads can slow
# down far more than the Swift side (10-20x seen on 2 cores); each round prints the CPU other
# processes used meanwhile.
# GFLOP/s rows: Swift counts the GEMMs it executes, bench_torch.py an analytic count of TRL's work.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dpo=${DPO:-$root/.build/release/dpo}
python=${TORCH_PYTHON:-.venv-tools/bin/python}
rounds=3
pass=()
swift_only=()
torch_only=()
shapes=()
while [ $# -gt 0 ]; do
    case $1 in
        --rounds) rounds=$2; shift 2 ;;
        --python) python=$2; shift 2 ;;
        --pairs|--prompt-length|--completion-length|--reference|--steps|--warmup|--threads)
            pass+=("$1" "$2"); shift 2 ;;
        --packing) swift_only+=("$1" "$2"); shift 2 ;;
        --bf16) pass+=("$1"); shift ;;
        --trl) torch_only+=("$1"); shift ;;
        -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) echo "compare_bench: unknown option $1" >&2; exit 2 ;;
        *) shapes+=("$1"); shift ;;
    esac
done
[ ${#shapes[@]} -gt 0 ] || shapes=(tiny smollm2-135m)
[ -x "$dpo" ] || { echo "compare_bench: $dpo not found; run 'make build' first" >&2; exit 1; }
"$python" -c 'import torch, transformers' 2>/dev/null \
    || { echo "compare_bench: $python cannot import torch and transformers (see tools/bench_torch.py)" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp "$dpo" "$tmp/dpo" && dpo=$tmp/dpo  # one binary for every round, even if .build is rebuilt meanwhile
ticks() {  # CPU ticks: busy, total (all CPUs, /proc/stat) and our finished children's (/proc/$$/stat)
    local st; read -r -a st </proc/$$/stat
    awk -v kids=$((st[15] + st[16])) '/^cpu /{print $2+$3+$4+$7+$8+$9, $2+$3+$4+$5+$6+$7+$8+$9, kids}' /proc/stat
}
run() {  # run SIDE SHAPE ROUND: one bench in a fresh process; appends "SIDE ROUND OTHERS% JSON" to $tmp/SHAPE
    local out a b
    a=($(ticks))
    if [ "$1" = swift ]; then out=$("$dpo" bench --shape "$2" "${pass[@]}" "${swift_only[@]}" --json)
    else out=$("$python" "$root/tools/bench_torch.py" --shape "$2" "${pass[@]}" "${torch_only[@]}" --json); fi
    b=($(ticks))
    # CPU that other processes used meanwhile, in % of the machine: busy ticks not ours / all ticks
    local others=$(( ((b[0] - a[0]) - (b[2] - a[2])) * 100 / (b[1] - a[1]) ))
    echo "$1 $3 $((others < 0 ? 0 : others)) $(grep '^{' <<<"$out" | tail -n 1)" >>"$tmp/$2"
}

echo "$(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); args: ${pass[*]} ${swift_only[*]} ${torch_only[*]}"
for shape in "${shapes[@]}"; do
    for ((r = 1; r <= rounds; r++)); do
        echo "  $shape round $r/$rounds" >&2
        if ((r % 2)); then run swift "$shape" $r; run torch "$shape" $r
        else run torch "$shape" $r; run swift "$shape" $r; fi
    done
done

for shape in "${shapes[@]}"; do
python3 - "$tmp/$shape" "$shape" <<'EOF'
import json, sys
from statistics import median
runs = {"swift": {}, "torch": {}}
for line in open(sys.argv[1]):
    side, rnd, others, obj = line.split(" ", 3)
    runs[side][int(rnd)] = dict(json.loads(obj), others=int(others))
rounds = sorted(runs["swift"])
def col(side, key): return [runs[side][r][key] for r in rounds]
def ratio(key): return median(runs["swift"][r][key] / runs["torch"][r][key] for r in rounds)
s0, t0 = runs["swift"][rounds[0]], runs["torch"][rounds[0]]
print(f"\n{sys.argv[2]}: reference {s0['reference']}, swift packing {s0.get('packing', 'plain')}, "
      f"torch {t0.get('runner', 'eager')}{', bf16' if s0.get('bf16') else ''}, "
      f"{s0['tokens_per_step']:.0f} tokens/step, "
      f"threads swift {s0['threads']:.0f} / torch {t0['threads']:.0f}, {len(rounds)} rounds (medians)")
print(f"  {'':<22}{'swift':>10}{'torch':>10}{'swift/torch':>13}")
rows = [("step seconds", "step_seconds", "{:10.4f}"), ("tokens/s", "tokens_per_second", "{:10.1f}"),
        ("achieved GFLOP/s", "achieved_gflops", "{:10.1f}"), ("sgemm GFLOP/s", "sgemm_gflops", "{:10.1f}"),
        ("peak RSS MiB", "peak_rss_mib", "{:10.1f}")]
for label, key, fmt in rows:
    r = {"tokens_per_second": "throughput", "peak_rss_mib": "memory"}.get(key)
    tail = f"{ratio(key):12.3f}x {r}" if r else ""
    print(f"  {label:<22}" + fmt.format(median(col("swift", key))) + fmt.format(median(col("torch", key))) + tail)
for side in ("swift", "torch"):
    print(f"  {side} per round: step seconds " + " ".join(f"{x:.4f}" for x in col(side, "step_seconds"))
          + ", CPU used by other processes meanwhile " + " ".join(f"{x}%" for x in col(side, "others")))
EOF
done
