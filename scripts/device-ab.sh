#!/usr/bin/env bash
# On the GPU machine: a quick A/B of env switches with prebuilt binaries (no build), for experiments between
# full device-check runs. Build here (`cmake --build build-cuda --target mxserve cuda_kernels_test
# cuda_runner_test`), copy the stripped binaries into a git-excluded folder, carry it, then:
#   MXS_BIN=wt-bin MXS_AB="A=1 B=1" bash scripts/device-ab.sh
# Runs the CUDA kernel and runner tests (MXS_TESTS=0 skips them), then per preset (MXS_PRESETS, default
# "20b 120b") and batch (MXS_AB_BATCHES, default 1) the decode step with each switch vs without, same binary.
# A switch may set several variables joined by commas (A=1,B=1); MXS_AB_BASE applies to both sides.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/mxs-out}"; mkdir -p "$OUT"
BINDIR="${MXS_BIN:-build-device}"
# Test data paths are compiled in as /work/main/...; point them at this copy of the tree.
[ -d /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$OUT/card.txt"
if [ "${MXS_TESTS:-1}" = 1 ]; then
  for t in cuda_kernels_test cuda_runner_test; do
    f="$BINDIR/$t"; [ -x "$f" ] || f="$BINDIR/tests/$t"; [ -x "$f" ] || continue
    timeout 300 "$f" >"$OUT/$t.log" 2>&1
    echo "== $t rc=$? $(grep -E '^\[  PASSED|^\[  FAILED' "$OUT/$t.log" | tr '\n' ' ')"
    grep -E "^\[  FAILED|Failure|Which is|rel L2" "$OUT/$t.log" | head -20
  done
fi
step() { env ${MXS_AB_BASE:-} ${3//,/ } "$BINDIR/mxserve" bench decode --preset $1 --batch $2 --context 1024 --steps 64 2>/dev/null |
  awk -F'|' -v b=$2 '$2 ~ "^ *"b" *$" {gsub(/ /,"",$3); print $3}'; }
{
  echo "| preset | batch | switch | step ms with | step ms without |"; echo "|---|---:|---|---:|---:|"
  for preset in ${MXS_PRESETS:-20b 120b}; do
    for b in ${MXS_AB_BATCHES:-1}; do
      for ab in ${MXS_AB:-X=1}; do echo "| $preset | $b | $ab | $(step $preset $b $ab) | $(step $preset $b X=1) |"; done
    done
  done
} | tee "$OUT/ab.md"
