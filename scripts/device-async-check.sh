#!/usr/bin/env bash
# On the GPU machine, in one call: the async-scheduling check (docs/ARCHITECTURE.md "Async scheduling").
# Builds mxserve and the async tests (scripts/device-setup.sh) and runs them; with a base tree in .base/ (e.g.
# `git archive <base commit> | tar -x -C .base`) also builds its mxserve as "before". Makes a `mkmodel --preset
# 20b` checkpoint, then `bench throughput` (1024 in + 256 out) before / --async-scheduling off / on at
# concurrency 1 and 64 (same card, interleaved), `bench decode` before / after (it calls the blocking
# CudaRunner::step, now submit + collect), and, time permitting, compute-sanitizer memcheck on the async GPU
# test. Logs in $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/mxs-out}"
mkdir -p "$OUT"
[ -f .carry/tokenizer.json ] && export MXSERVE_TOKENIZER="$PWD/.carry/tokenizer.json"
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/card.txt"
t0=$(date +%s)
el() { echo $(( $(date +%s) - t0 )); }
TARGETS="mxserve cuda_async_test engine_async_test" \
  bash scripts/device-setup.sh >"$OUT/build.log" 2>&1 || { echo "build failed"; grep -E "error" "$OUT/build.log" | head -20; exit 1; }
B=build-device
BASE=""
if [ -d .base ]; then
  cp -r .carry .base/ && (cd .base && TARGETS=mxserve bash scripts/device-setup.sh >"$OUT/build_base.log" 2>&1) \
    && BASE=.base/build-device/mxserve || echo "base build failed"
fi
echo "== builds done at $(el) s"
for t in cuda_async_test engine_async_test; do
  timeout 60 "$B/tests/$t" >"$OUT/$t.log" 2>&1
  echo "== $t rc=$? $(grep -E '^\[  (PASSED|FAILED) ' "$OUT/$t.log" | tr '\n' ' ')"
  grep -E "Failure|Which is|Expected" -A2 "$OUT/$t.log" | head -24
done
timeout 60 "$B/mxserve" mkmodel --preset 20b --seed 1 --tokenizer .carry/tokenizer.json --out /tmp/m20b -q \
  >"$OUT/mkmodel.log" 2>&1
echo "== mkmodel 20b rc=$? at $(el) s"
tp() {
  local bin=$1; shift
  timeout 90 "$bin" bench throughput --backend cuda --model /tmp/m20b --input-len 1024 --output-len 256 "$@" \
    2>>"$OUT/throughput.err" | grep -E "^\| [0-9]"
}
echo "| run | concurrency | output tok/s | total tok/s | mean step ms | peak KV usage | mean TTFT s | mean TPOT ms | preemptions |"
c1="--num-prompts 8 --concurrency 1"; c64="--num-prompts 64 --concurrency 64"
[ -n "$BASE" ] && echo "| c1 before (base) $(tp $BASE $c1)"
for m in off on; do echo "| c1 async $m $(tp $B/mxserve $c1 --async-scheduling $m)"; done
[ -n "$BASE" ] && echo "| c64 before (base) $(tp $BASE $c64)"
for m in off on; do echo "| c64 async $m $(tp $B/mxserve $c64 --async-scheduling $m)"; done
echo "== throughput done at $(el) s"
for bin in $BASE $B/mxserve; do
  timeout 40 "$bin" bench decode --model /tmp/m20b --batch 1,64 --context 1024 --steps 32 >"$OUT/decode.md" 2>"$OUT/decode.err"
  echo "== bench decode $bin rc=$?"; grep -E "^\| (1|64) " "$OUT/decode.md"
done
if [ "$(el)" -lt 185 ]; then
  [ -n "$BASE" ] && echo "| c64 before (base) $(tp $BASE $c64)"
  for m in off on; do echo "| c64 async $m $(tp $B/mxserve $c64 --async-scheduling $m)"; done
fi
left=$(( 228 - $(el) ))
if [ "$left" -gt 20 ]; then
  CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  timeout "$left" "$CS" --tool memcheck --error-exitcode 9 "$B/tests/cuda_async_test" \
    --gtest_filter='CudaAsync.CopySampledTokens*:CudaAsync.TwoPhase*' >"$OUT/memcheck.log" 2>&1
  echo "== memcheck cuda_async_test (handoff + two-phase) rc=$? $(grep -E 'ERROR SUMMARY|PASSED|FAILED' "$OUT/memcheck.log" | tr '\n' ' ')"
fi
echo "== all done at $(el) s"
