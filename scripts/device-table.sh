#!/usr/bin/env bash
# On the GPU machine, with binaries built here and carried xz-packed (scripts/pack-bins.sh):
# every figure of the README's H200 performance table, in one call of ~2.5 minutes, from one binary.
#   decode (greedy; batch 1-256, 1k context; batch 1 twice more; 8k context), the batch-1 per-kernel breakdown,
#   gpt-oss-120b, sampled decode (temperature 1, top-p 0.9, a presence penalty, logprobs), prefill TTFT, and on a
#   `mkmodel` 20b checkpoint: load + `generate`, engine throughput and the server (scripts/device-serve.sh).
# There: bash scripts/device-table.sh  (carry wt-pack). Tables go to stdout and $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device-bins-env.sh
T0=$(date +%s); ts() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv,noheader
echo "commit ${MXSERVE_COMMIT:-unknown}"
rows() { grep -E "^\| [0-9]|copy bandwidth|card" "$1"; }

dec() {  # dec NAME ARGS...: one bench decode run, its rows
  local name=$1; shift
  timeout 300 $B bench decode "$@" --json "$OUT/$name.json" >"$OUT/$name.md" 2>"$OUT/$name.err"
  ts "bench decode $* rc=$?"; rows "$OUT/$name.md"
}
dec greedy --preset 20b --batch 1,2,4,8,16,32,64,128,256 --context 1024 --steps 32 --breakdown 1
grep -E "^\| [a-z_]+ \| [0-9]" "$OUT/greedy.md"
for r in 2 3; do dec greedy_b1_$r --preset 20b --batch 1 --context 1024 --steps 64 --breakdown none; done
dec ctx8k --preset 20b --batch 1,8,64 --context 8192 --steps 32 --breakdown none
dec b120 --preset 120b --batch 1,8,64 --context 1024 --steps 32 --breakdown none
dec t1 --preset 20b --batch 1,8,64 --context 1024 --steps 32 --breakdown none --temperature 1
dec topp --preset 20b --batch 1,8,64 --context 1024 --steps 32 --breakdown none --temperature 1 --top-p 0.9
dec pen --preset 20b --batch 1,8,64 --context 1024 --steps 32 --breakdown none --temperature 1 --presence-penalty 0.5
dec logp --preset 20b --batch 1,8,64 --context 1024 --steps 32 --breakdown none --logprobs

timeout 300 $B bench prefill --preset 20b --prompt 512,1024,2048,8192,32768 --json "$OUT/prefill.json" \
  >"$OUT/prefill.md" 2>"$OUT/prefill.err"
ts "bench prefill rc=$?"; grep -E "^\||card" "$OUT/prefill.md"

if [ -f wt-bin/tokenizer.json ]; then
  timeout 240 $B mkmodel --preset 20b --seed 1 --tokenizer wt-bin/tokenizer.json --out /tmp/m20b >"$OUT/mkmodel.log" 2>&1
  ts "mkmodel rc=$?"; cat /tmp/m20b/*.safetensors >/dev/null  # page cache
  timeout 120 $B generate --model /tmp/m20b --backend cuda --max-tokens 256 --temperature 0 --raw -p "Hello" \
    >"$OUT/generate.txt" 2>"$OUT/generate.err"
  ts "generate rc=$?"; grep -E "load|tok/s|TTFT" "$OUT/generate.err" | tail -4
  OUT="$OUT" bash scripts/device-serve.sh "$B" /tmp/m20b
fi
ts "done"
