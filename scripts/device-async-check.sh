#!/usr/bin/env bash
# On the GPU machine, in one call: the async-scheduling check (docs/ARCHITECTURE.md "Async scheduling").
# Builds mxserve and the async tests (scripts/device-setup.sh), runs them (plus the CudaRunner tests the
# two-phase refactor touches), makes a `mkmodel --preset 20b` checkpoint, then `bench throughput` with
# --async-scheduling off and on (same binary, same card, interleaved) at concurrency 1 and 64, and
# `bench decode` (which calls the blocking CudaRunner::step, now submit + collect). Logs in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/mxs-out}"
mkdir -p "$OUT"
[ -f .carry/tokenizer.json ] && export MXSERVE_TOKENIZER="$PWD/.carry/tokenizer.json"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/card.txt"
t0=$(date +%s)
TARGETS="mxserve cuda_async_test cuda_runner_test cuda_engine_kv_groups_test engine_async_test" \
  bash scripts/device-setup.sh >"$OUT/build.log" 2>&1 || { echo "build failed"; grep -E "error" "$OUT/build.log" | head -20; exit 1; }
echo "== build $(( $(date +%s) - t0 )) s"
B=build-device
for t in cuda_async_test engine_async_test cuda_engine_kv_groups_test cuda_runner_test; do
  timeout 90 "$B/tests/$t" >"$OUT/$t.log" 2>&1
  echo "== $t rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$t.log" | tr '\n' ' ')"
  grep -E "Failure|Which is|Expected|rror" -A2 "$OUT/$t.log" | head -24
done
echo "== tests done at $(( $(date +%s) - t0 )) s"
timeout 60 "$B/mxserve" mkmodel --preset 20b --seed 1 --tokenizer .carry/tokenizer.json --out /tmp/m20b -q \
  >"$OUT/mkmodel.log" 2>&1
echo "== mkmodel 20b rc=$?"
tp() {
  timeout 90 "$B/mxserve" bench throughput --backend cuda --model /tmp/m20b --input-len 1024 --output-len 256 "$@" \
    2>>"$OUT/throughput.err" | grep -E "^\| [0-9]"
}
echo "| run | concurrency | output tok/s | total tok/s | mean step ms | peak KV usage | mean TTFT s | mean TPOT ms | preemptions |"
for mode in off on off on; do echo "| c1 async $mode $(tp --num-prompts 8 --concurrency 1 --async-scheduling $mode)"; done
for mode in off on off on; do echo "| c64 async $mode $(tp --num-prompts 64 --concurrency 64 --async-scheduling $mode)"; done
echo "== throughput done at $(( $(date +%s) - t0 )) s"
timeout 60 "$B/mxserve" bench decode --model /tmp/m20b --batch 1,64 --context 1024 --steps 32 >"$OUT/decode.md" 2>"$OUT/decode.err"
echo "== bench decode rc=$?"; grep -E "^\|" "$OUT/decode.md"
echo "== all done at $(( $(date +%s) - t0 )) s"
