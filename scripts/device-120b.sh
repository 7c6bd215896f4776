#!/usr/bin/env bash
# gpt-oss-120b from a checkpoint on disk, end to end, on one GPU of the nvidia-h200-x2 machine (the only kind here
# with the disk for a ~65 GB checkpoint; the single-GPU machine has 64 GB): `mkmodel --preset 120b`, `inspect`,
# the CUDA runner against the CPU reference on it (CudaRunner120b), `bench decode --model` (load time, batch 1 / 8 /
# 64), `generate` greedy and at temperature 1, and the server (scripts/device-serve.sh without the 1k / 1k run).
# Binaries built here and carried xz-packed (scripts/pack-bins.sh). There: bash scripts/device-120b.sh
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device-bins-env.sh
export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
M=${MXS_120B_DIR:-/tmp/m120b}
T0=$(date +%s); ts() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | head -1; df -h "$(dirname "$M")" | tail -1; free -g | head -2
[ -f "$M/config.json" ] || { timeout 400 $B mkmodel --preset 120b --seed 1 --tokenizer wt-bin/tokenizer.json --out "$M" \
  >"$OUT/mkmodel_120b.log" 2>&1; ts "mkmodel 120b rc=$? $(du -sh "$M" | cut -f1)"; }
ls "$M" | head -20
timeout 60 $B inspect "$M" >"$OUT/inspect_120b.txt" 2>&1; ts "inspect rc=$?"; head -30 "$OUT/inspect_120b.txt"
# The 120b width (128 experts) at 2 layers first: a tight bound, top-1 equal (rounding has not yet moved a routing
# decision); then the whole 36 layers (bounded as random weights amplify with depth: tests/gpu/cuda_runner_test.cpp).
timeout 200 $B mkmodel --preset 120b --layers 2 --seed 1 --tokenizer wt-bin/tokenizer.json --out /tmp/m120b_2l -q \
  >"$OUT/mkmodel_120b_2l.log" 2>&1
MXSERVE_TEST_120B_DIR=/tmp/m120b_2l timeout 200 wt-bin/cuda_runner_test --gtest_filter='CudaRunner120b.*' \
  >"$OUT/test_120b_2l.log" 2>&1
ts "120b width, 2 layers, vs CPU rc=$? $(grep -E '^checkpoint' "$OUT/test_120b_2l.log")"; rm -rf /tmp/m120b_2l
MXSERVE_TEST_120B_DIR="$M" timeout 400 wt-bin/cuda_runner_test --gtest_filter='CudaRunner120b.*' \
  >"$OUT/test_120b.log" 2>&1
ts "120b vs CPU rc=$? $(grep -E '^\[  PASSED|^\[  FAILED' "$OUT/test_120b.log")"
grep -E "^step [0-9]|^checkpoint|Failure|exception|Which is" "$OUT/test_120b.log" | head -12
timeout 300 $B bench decode --model "$M" --batch 1,8,64 --context 1024 --steps 32 --breakdown none \
  >"$OUT/bench_120b_ckpt.md" 2>"$OUT/bench_120b_ckpt.err"
ts "bench decode --model rc=$?"; grep -E "^\| [0-9]|card" "$OUT/bench_120b_ckpt.md"
grep -E "weights on the GPU|error" "$OUT/bench_120b_ckpt.err" | head -3
for t in 0 1; do
  timeout 200 $B generate --model "$M" --backend cuda --max-tokens 128 --temperature $t --seed 7 --raw -p "Hello" \
    >"$OUT/gen120b_t$t.txt" 2>"$OUT/gen120b_t$t.err"
  ts "generate temperature $t rc=$? $(grep -E 'tok/s' "$OUT/gen120b_t$t.err" | tail -1)"
done
OUT="$OUT" MXS_SERVE_1K1K=0 bash scripts/device-serve.sh "$B" "$M"
ts "done"
