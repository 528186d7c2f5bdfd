#!/usr/bin/env bash
# make test-mpi: data-parallel training over MPI (Open MPI, `mpirun --oversubscribe -np 2`, tiny models).
#   1. `dpo train` and `dpo sft` on 2 ranks with per-device batch 2 train what 1 process with batch 4
#      trains: after 3 optimizer steps (accumulation 2, an epoch whose last global batch leaves a rank
#      one example) the weights differ by at most 1e-5 relative (only the order of sums differs) and
#      metrics.jsonl holds the same records (evaluation split across the ranks too);
#   2. the same for examples/mpi_train.c and examples/mpi_train.py (the distributed grain of libdpo.so
#      over MPI), whose 2-rank runs are also bit-identical to each other;
#   3. a 2-rank run resumed from its checkpoint is bit-identical to the uninterrupted 2-rank run;
#   4. failures: a rank killed mid-run, a rank that cannot read its data, rank 0 failing to write a
#      checkpoint: the job ends within a bounded time (timeout 120 s) with a non-zero status and a
#      message naming the rank; the checkpoints left are complete (one of them resumes);
#   5. one process needs no MPI: neither libdpo.so nor the dpo command links it, and `dpo train`
#      runs with the shim out of reach; other commands refuse to run under mpirun.
# Usage: Tests/mpi/run.sh [library-dir]   (default .build/release: dpo, libdpo.so, libdpo_mpi.so)
# PYTHONPATH must give mpi4py (make deps installs it into .cache/mpi4py; the Makefile sets it).
set -u
cd "$(dirname "$0")/../.."
LIBDIR=$(cd "${1:-.build/release}" && pwd)
DPO=$LIBDIR/dpo
PYTHON=${PYTHON:-python3}
COMPARE=("$PYTHON" Tests/mpi/compare.py)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0; failed=0
ok()   { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [ -n "${2:-}" ] && sed 's/^/     /' "$2" | tail -25; }

for f in "$DPO" "$LIBDIR/libdpo.so" "$LIBDIR/libdpo_mpi.so"; do
    [ -f "$f" ] || { echo "test-mpi: $f not found: run 'make build mpi' first" >&2; exit 1; }
done
command -v mpirun >/dev/null && command -v mpicc >/dev/null || { echo "test-mpi: mpirun/mpicc not found: run 'make deps' (Debian: libopenmpi-dev openmpi-bin)" >&2; exit 1; }
# Open MPI refuses root unless told (CI containers run as root).
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
MPIRUN=(timeout 120 mpirun --oversubscribe -np 2)

# A byte-tokenizer model and small text data: 11 pairs and 9 SFT rows, so that global batches of 4
# end each epoch with a short one (3 rows: rank 1 gets one) and epochs end with a 1-micro-batch step.
cat >"$tmp/config.json" <<'J'
{"model_type": "llama", "vocab_size": 259, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
 "num_attention_heads": 2, "num_key_value_heads": 1, "tie_word_embeddings": true, "bos_token_id": 256, "eos_token_id": 257}
J
"$PYTHON" - "$tmp" <<'PY'
import json, random, sys
r = random.Random(0)
words = ["tea", "lamp", "coat", "cake", "film", "song", "book", "road"]
good, bad = ["great", "lovely", "superb", "fine"], ["awful", "useless", "dreadful", "poor"]
with open(sys.argv[1] + "/pairs.jsonl", "w") as f:
    for i in range(11):
        tail = " and so on" * r.randint(0, 3) + "."
        f.write(json.dumps({"prompt": "The %s was" % r.choice(words), "chosen": " " + r.choice(good) + tail,
                            "rejected": " " + r.choice(bad) + tail}) + "\n")
with open(sys.argv[1] + "/sft.jsonl", "w") as f:
    for i in range(9):
        f.write(json.dumps({"prompt": "The %s is" % r.choice(words), "completion": " " + r.choice(good) + " indeed" * r.randint(0, 3)}) + "\n")
PY

# 1. dpo train / dpo sft: 2 ranks x 2 = 1 process x 4.
common=(--config "$tmp/config.json" --max-steps 3 --gradient-accumulation-steps 2 --learning-rate 1e-2 --logging-steps 1)
for cmd in train sft; do
    data=$tmp/pairs.jsonl; [ $cmd = sft ] && data=$tmp/sft.jsonl
    if "${MPIRUN[@]}" "$DPO" $cmd "${common[@]}" --data "$data" --eval-data "$data" --per-device-train-batch-size 2 \
           --per-device-eval-batch-size 2 --output "$tmp/$cmd-2" >"$tmp/$cmd-2.log" 2>&1 \
       && "$DPO" $cmd "${common[@]}" --data "$data" --eval-data "$data" --per-device-train-batch-size 4 \
           --per-device-eval-batch-size 4 --output "$tmp/$cmd-1" >"$tmp/$cmd-1.log" 2>&1 \
       && "${COMPARE[@]}" weights "$tmp/$cmd-2/model/model.safetensors" "$tmp/$cmd-1/model/model.safetensors" >"$tmp/cmp" 2>&1 \
       && "${COMPARE[@]}" metrics "$tmp/$cmd-2/metrics.jsonl" "$tmp/$cmd-1/metrics.jsonl" >>"$tmp/cmp" 2>&1 \
       && grep -q '"eval_loss"' "$tmp/$cmd-2/metrics.jsonl"; then
        ok "dpo $cmd: 2 ranks x 2 = 1 process x 4 ($(tr '\n' ';' <"$tmp/cmp"))"
    else cat "$tmp/$cmd-2.log" "$tmp/$cmd-1.log" >>"$tmp/cmp"; fail "dpo $cmd: 2 ranks x 2 = 1 process x 4" "$tmp/cmp"; fi
done
# LoRA on a base kept quantized (a Q8_0 GGUF of the same shape): the adapter trained on 2 ranks x 2
# equals the one trained by 1 process x 4; the ranks share no weights but the adapter's gradients.
# Bound 1e-4: AdamW's first steps move each B entry by about lr whatever its gradient's size, so the
# summation order's rounding in near-zero gradients shows at lr scale (measured 1.2e-5; the same
# with the fp32-loaded base, and the quantized runs equal the fp32-loaded ones bit for bit).
"$DPO" sft --config "$tmp/config.json" --data "$tmp/sft.jsonl" --max-steps 1 --save-format gguf --save-dtype q8_0 \
    --output "$tmp/q8" >"$tmp/q8.log" 2>&1
qcommon=(--model "$tmp/q8/model.gguf" --data "$tmp/pairs.jsonl" --use-peft --keep-base-quantized --lora-r 4 --lora-dropout 0
         --lora-target-modules all-linear --max-steps 3 --gradient-accumulation-steps 2 --learning-rate 1e-2 --logging-steps 1
         --save-format safetensors)
if [ -s "$tmp/q8/model.gguf" ] \
   && "${MPIRUN[@]}" "$DPO" train "${qcommon[@]}" --per-device-train-batch-size 2 --output "$tmp/q-2" >"$tmp/q.log" 2>&1 \
   && "$DPO" train "${qcommon[@]}" --per-device-train-batch-size 4 --output "$tmp/q-1" >>"$tmp/q.log" 2>&1 \
   && grep -q "the base kept quantized" "$tmp/q.log" \
   && "${COMPARE[@]}" weights "$tmp/q-2/adapter/adapter_model.safetensors" "$tmp/q-1/adapter/adapter_model.safetensors" --tolerance 1e-4 >"$tmp/cmp" 2>&1 \
   && "${COMPARE[@]}" metrics "$tmp/q-2/metrics.jsonl" "$tmp/q-1/metrics.jsonl" >>"$tmp/cmp" 2>&1; then
    ok "LoRA on a quantized base: 2 ranks x 2 = 1 process x 4 ($(tr '\n' ';' <"$tmp/cmp"))"
else cat "$tmp/q8.log" "$tmp/q.log" >>"$tmp/cmp"; fail "LoRA on a quantized base on 2 ranks" "$tmp/cmp"; fi
# Precomputed reference log-probs: the ranks share the precompute pass, in per-device batches (as TRL's
# precompute_ref_batch_size), so the reference sums come from other batches than the one process's and
# differ by float32 rounding; the rewards/* built on them are left out of the metrics compared (at
# step 1 the policy is the reference: the rewards are that noise, and its sign makes the accuracy).
if "${MPIRUN[@]}" "$DPO" train "${common[@]}" --data "$tmp/pairs.jsonl" --precompute-ref-log-probs --per-device-train-batch-size 2 \
       --output "$tmp/pre-2" >"$tmp/pre.log" 2>&1 \
   && "$DPO" train "${common[@]}" --data "$tmp/pairs.jsonl" --precompute-ref-log-probs --per-device-train-batch-size 4 \
       --output "$tmp/pre-1" >>"$tmp/pre.log" 2>&1 \
   && "${COMPARE[@]}" weights "$tmp/pre-2/model/model.safetensors" "$tmp/pre-1/model/model.safetensors" >"$tmp/cmp" 2>&1 \
   && "${COMPARE[@]}" metrics "$tmp/pre-2/metrics.jsonl" "$tmp/pre-1/metrics.jsonl" --skip rewards/ >>"$tmp/cmp" 2>&1; then
    ok "dpo train --precompute-ref-log-probs: 2 ranks x 2 = 1 process x 4 ($(tr '\n' ';' <"$tmp/cmp"))"
else cat "$tmp/pre.log" >>"$tmp/cmp"; fail "dpo train --precompute-ref-log-probs on 2 ranks" "$tmp/cmp"; fi
# Rank 0 alone prints, and says where the time went.
if [ "$(grep -c '^train: done' "$tmp/train-2.log")" = 1 ] && grep -q '^data parallel: 2 ranks' "$tmp/train-2.log"; then
    ok "rank 0 alone prints, with the time split (gradient allreduce, gathers, the rest)"
else fail "rank 0 alone prints" "$tmp/train-2.log"; fi

# 2. The C and Python examples: the distributed grain of libdpo.so over MPI.
if mpicc -std=c99 -Wall -Wextra -pedantic -Werror examples/mpi_train.c -Iinclude -L"$LIBDIR" -ldpo -Wl,-rpath,"$LIBDIR" \
       -o "$tmp/mpi_train" 2>"$tmp/cc.log"; then ok "examples/mpi_train.c compiles with -Wall -Wextra -pedantic -Werror"
else fail "examples/mpi_train.c compiles" "$tmp/cc.log"; fi
export PYTHONPATH="$PWD/bindings/python${PYTHONPATH:+:$PYTHONPATH}"
[ "$LIBDIR" = "$PWD/.build/release" ] || export DPO_LIBRARY="$LIBDIR/libdpo.so"
for ex in c py; do
    if [ $ex = c ]; then run=("$tmp/mpi_train"); else run=("$PYTHON" "$PWD/examples/mpi_train.py"); fi
    if (cd "$tmp" && "${MPIRUN[@]}" "${run[@]}" 2 "$tmp/$ex-2" >"$tmp/$ex-2.jsonl" 2>"$tmp/$ex.log") \
       && (cd "$tmp" && timeout 120 "${run[@]}" 4 "$tmp/$ex-1" >"$tmp/$ex-1.jsonl" 2>>"$tmp/$ex.log") \
       && [ "$(wc -l <"$tmp/$ex-2.jsonl")" = 3 ] \
       && "${COMPARE[@]}" weights "$tmp/$ex-2/model.safetensors" "$tmp/$ex-1/model.safetensors" >"$tmp/cmp" 2>&1 \
       && "${COMPARE[@]}" metrics "$tmp/$ex-2.jsonl" "$tmp/$ex-1.jsonl" >>"$tmp/cmp" 2>&1; then
        ok "examples/mpi_train.$ex: 2 ranks x 2 = 1 process x 4 ($(tr '\n' ';' <"$tmp/cmp"))"
    else cat "$tmp/$ex.log" "$tmp/$ex-2.jsonl" >>"$tmp/cmp"; fail "examples/mpi_train.$ex: 2 ranks x 2 = 1 process x 4" "$tmp/cmp"; fi
done
if cmp -s "$tmp/c-2/model.safetensors" "$tmp/py-2/model.safetensors" \
   && "${COMPARE[@]}" metrics "$tmp/c-2.jsonl" "$tmp/py-2.jsonl" --exact >"$tmp/cmp" 2>&1; then
    ok "the C and Python examples train the same bits and print the same metrics"
else fail "the C and Python examples agree" "$tmp/cmp"; fi

# 3. Resume under MPI: bit-identical to the uninterrupted 2-rank run.
rcommon=(--config "$tmp/config.json" --data "$tmp/pairs.jsonl" --max-steps 5 --gradient-accumulation-steps 2 --learning-rate 1e-2
         --per-device-train-batch-size 2 --logging-steps 2 --save-steps 2)
if "${MPIRUN[@]}" "$DPO" train "${rcommon[@]}" --output "$tmp/full" >"$tmp/log" 2>&1 \
   && "${MPIRUN[@]}" "$DPO" train "${rcommon[@]}" --resume "$tmp/full/checkpoint-2" --output "$tmp/resumed" >>"$tmp/log" 2>&1 \
   && cmp "$tmp/full/model/model.safetensors" "$tmp/resumed/model/model.safetensors" >>"$tmp/log" 2>&1 \
   && cmp "$tmp/full/checkpoint-4/model/model.safetensors" "$tmp/resumed/checkpoint-4/model/model.safetensors" >>"$tmp/log" 2>&1 \
   && head -n -1 "$tmp/full/metrics.jsonl" >"$tmp/a" && head -n -1 "$tmp/resumed/metrics.jsonl" >"$tmp/b" && cmp "$tmp/a" "$tmp/b" >>"$tmp/log" 2>&1 \
   && grep -q '"world_size": 2' "$tmp/full/checkpoint-2/trainer_state.json"; then
    ok "resume under MPI: bit-identical weights and log history"
else fail "resume under MPI" "$tmp/log"; fi
if "${MPIRUN[@]}" "$DPO" train "${rcommon[@]}" --per-device-train-batch-size 1 --resume "$tmp/full/checkpoint-2" --output "$tmp/other" >"$tmp/log" 2>&1; then
    fail "resume with another global batch is refused" "$tmp/log"
elif grep -q "per_device_train_batch_size 2 on 2 ranks, the arguments give 1 on 2 ranks" "$tmp/log"; then
    ok "resume with another global batch is refused, naming both"
else fail "resume with another global batch: the message" "$tmp/log"; fi

# 4. Failures end the job within the timeout, non-zero, naming the rank.
# A rank killed mid-run (kill -9 of rank 1 once checkpoints are being written).
# rank_pid JOB RANK: the pid of rank RANK of the job started as JOB (timeout -> mpirun -> ranks).
rank_pid() {
    local p c
    for p in $(pgrep -P "$1"); do
        for c in $(pgrep -P "$p"); do
            tr '\0' '\n' <"/proc/$c/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && echo "$c"
        done
    done
}
"${MPIRUN[@]}" "$DPO" train --config "$tmp/config.json" --data "$tmp/pairs.jsonl" --max-steps 1000000 --learning-rate 1e-3 \
    --per-device-train-batch-size 2 --save-steps 20 --save-total-limit 2 --logging-steps 1000 --output "$tmp/killed" >"$tmp/kill.log" 2>&1 &
job=$!
victim=""
for _ in $(seq 1 300); do
    if [ -z "$victim" ] && ls -d "$tmp/killed/checkpoint-"* >/dev/null 2>&1; then
        victim=$(rank_pid $job 1)
        [ -n "$victim" ] && kill -9 "$victim"
    fi
    kill -0 $job 2>/dev/null || break
    sleep 0.2
done
wait $job; rc=$?
if [ -n "$victim" ] && [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "rank 1" "$tmp/kill.log"; then
    ok "a rank killed mid-run: the job ends (status $rc) naming it: $(grep -m1 -o 'process rank 1[^.]*' "$tmp/kill.log")"
else echo "     victim '$victim', status $rc"; fail "a rank killed mid-run" "$tmp/kill.log"; fi
# What it left: only complete checkpoints (each resumes), no half-written one.
last=$(ls -d "$tmp/killed/checkpoint-"* 2>/dev/null | sed 's/.*checkpoint-//' | sort -n | tail -1)
incomplete=$(for d in "$tmp/killed/checkpoint-"*; do [ -f "$d/manifest.json" ] || echo "$d"; done)
if [ -n "$last" ] && [ -z "$incomplete" ] \
   && "$DPO" train --config "$tmp/config.json" --data "$tmp/pairs.jsonl" --max-steps $((last + 1)) --learning-rate 1e-3 \
        --per-device-train-batch-size 4 --resume "$tmp/killed/checkpoint-$last" --output "$tmp/after-kill" >"$tmp/log" 2>&1; then
    ok "after the kill: every checkpoint is complete, the last (step $last) resumes"
else echo "     last '$last', incomplete '$incomplete'"; fail "checkpoints after the kill" "$tmp/log"; fi

# SIGUSR1 to mpirun (which forwards it to every rank; its own Ctrl-C ends the job at once): every
# rank stops at the next optimizer step, rank 0 writes a checkpoint, exit 130; resuming from it gives
# the uninterrupted run's weights.
ucommon=(--config "$tmp/config.json" --data "$tmp/pairs.jsonl" --learning-rate 1e-3 --lr-scheduler-type constant
         --per-device-train-batch-size 2 --gradient-accumulation-steps 2 --logging-steps 50)
"${MPIRUN[@]}" "$DPO" train "${ucommon[@]}" --max-steps 1000000 --output "$tmp/usr1" >"$tmp/usr1.log" 2>&1 &
job=$!
sent=""
for _ in $(seq 1 300); do
    if [ -z "$sent" ] && [ -s "$tmp/usr1/metrics.jsonl" ]; then
        kill -USR1 "$(pgrep -P $job)"; sent=1
    fi
    kill -0 $job 2>/dev/null || break
    sleep 0.2
done
wait $job; rc=$?
stop=$(sed -n 's/.*checkpoint written to .*checkpoint-\([0-9]*\) .*/\1/p' "$tmp/usr1.log" | head -1)
if [ $rc = 130 ] && [ -n "$stop" ] \
   && "${MPIRUN[@]}" "$DPO" train "${ucommon[@]}" --max-steps $((stop + 2)) --resume "$tmp/usr1/checkpoint-$stop" --output "$tmp/usr1-resumed" >"$tmp/log" 2>&1 \
   && "${MPIRUN[@]}" "$DPO" train "${ucommon[@]}" --max-steps $((stop + 2)) --output "$tmp/usr1-full" >>"$tmp/log" 2>&1 \
   && cmp "$tmp/usr1-full/model/model.safetensors" "$tmp/usr1-resumed/model/model.safetensors" >>"$tmp/log" 2>&1; then
    ok "SIGUSR1: every rank stops at step $stop with rank 0's checkpoint (exit 130), which resumes bit-identically"
else echo "     status $rc, stop '$stop'"; cat "$tmp/usr1.log" >>"$tmp/log"; fail "SIGUSR1 stop" "$tmp/log"; fi

# A rank that fails before training (its data file is missing): it names itself and ends the job.
mpmd=(timeout 120 mpirun --oversubscribe -np 1 "$DPO" train --config "$tmp/config.json" --data "$tmp/pairs.jsonl" --max-steps 3 --output "$tmp/raise"
      : -np 1 "$DPO" train --config "$tmp/config.json" --data "$tmp/missing.jsonl" --max-steps 3 --output "$tmp/raise")
"${mpmd[@]}" >"$tmp/log" 2>&1; rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "dpo: rank 1 of 2: .*missing.jsonl" "$tmp/log"; then
    ok "a rank that raises ends the job (status $rc): $(grep -m1 'dpo: rank 1 of 2' "$tmp/log" | cut -c1-100)"
else echo "     status $rc"; fail "a rank that raises" "$tmp/log"; fi
# Rank 0 failing mid-run (its checkpoint path holds something else): the others do not wait forever.
mkdir -p "$tmp/blocked/checkpoint-2" && echo keep >"$tmp/blocked/checkpoint-2/notes.txt"
"${MPIRUN[@]}" "$DPO" train --config "$tmp/config.json" --data "$tmp/pairs.jsonl" --max-steps 4 --per-device-train-batch-size 2 \
    --save-steps 2 --output "$tmp/blocked" >"$tmp/log" 2>&1; rc=$?
if [ $rc -ne 0 ] && [ $rc -ne 124 ] && grep -q "dpo: rank 0 of 2: I/O error: .*checkpoint-2" "$tmp/log" && [ "$(cat "$tmp/blocked/checkpoint-2/notes.txt")" = keep ]; then
    ok "rank 0 failing mid-run ends the job (status $rc), its checkpoint path left as it was"
else echo "     status $rc"; fail "rank 0 failing mid-run" "$tmp/log"; fi

# 5. One process needs no MPI.
if ! readelf -d "$LIBDIR/libdpo.so" | grep NEEDED | grep -qi mpi && ! readelf -d "$DPO" | grep NEEDED | grep -qi mpi \
   && DPO_MPI_LIBRARY=/nonexistent/libdpo_mpi.so "$DPO" train --config "$tmp/config.json" --data "$tmp/pairs.jsonl" --max-steps 1 \
        --output "$tmp/single" >"$tmp/log" 2>&1; then
    ok "neither libdpo.so nor dpo links MPI; one process runs without the shim"
else fail "one process without MPI" "$tmp/log"; fi
if "${MPIRUN[@]}" "$DPO" eval --model "$tmp/single/model" --data "$tmp/pairs.jsonl" >"$tmp/log" 2>&1; then
    fail "dpo eval under mpirun is refused" "$tmp/log"
elif grep -q "only \`dpo train\` and \`dpo sft\` do under mpirun" "$tmp/log"; then ok "other commands refuse to run under mpirun"
else fail "dpo eval under mpirun: the message" "$tmp/log"; fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
