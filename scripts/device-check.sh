#!/usr/bin/env bash
# On the GPU machine, in one call: build (scripts/device-setup.sh), the GPU tests (ctest -L gpu), one
# compute-sanitizer run, and `mxserve bench decode` on random 20b weights; with MXS_CHECK_CKPT=1 also a
# `mkmodel --preset 20b` checkpoint: load time, bench decode --model, generate --backend cuda.
# Logs and results go to $OUT (the device tool's output folder; default /tmp/mxs-out). Prints a summary last.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/mxs-out}"
[ -f .carry/tokenizer.json ] && export MXSERVE_TOKENIZER="$PWD/.carry/tokenizer.json"
[ -f .carry/COMMIT ] && export MXSERVE_COMMIT="$(cat .carry/COMMIT)"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv,noheader | tee "$OUT/card.txt"

# Build: the whole tree; if another layer fails to build, still build the CUDA tests and the binary's deps.
if ! bash scripts/device-setup.sh >"$OUT/build.log" 2>&1; then
  echo "full build failed (tail of build.log):"; tail -20 "$OUT/build.log"
  cmake --build build-device -j 16 --target cuda_kernels_test cuda_sampling_test cuda_runner_test mxserve \
    >>"$OUT/build.log" 2>&1 || { echo "CUDA targets failed to build"; grep -E "error" "$OUT/build.log" | head -30; }
fi
grep -E "ptxas warning|spill" "$OUT/build.log" | sort -u | head -20 >"$OUT/ptxas.txt"

# GPU tests.
(cd build-device && timeout 420 ctest -L gpu --output-on-failure) >"$OUT/ctest_gpu.log" 2>&1
echo "== ctest -L gpu: $(grep -E 'tests passed|tests failed' "$OUT/ctest_gpu.log")"
grep -E "^\[  FAILED|rel L2|tiny vs CPU|differ|Which is|exceeds" "$OUT/ctest_gpu.log" | head -60

# compute-sanitizer on one small run (memcheck).
if command -v compute-sanitizer >/dev/null || [ -x /usr/local/cuda/bin/compute-sanitizer ]; then
  CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
  timeout 240 "$CS" --tool memcheck --error-exitcode 9 build-device/tests/cuda_runner_test \
    --gtest_filter='*BadSequence*' >"$OUT/sanitizer.log" 2>&1
  echo "== compute-sanitizer memcheck: rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
  # The grouped GEMM at every token tile (the 32 / 64 tiles load through TMA and bulk copies).
  timeout 240 "$CS" --tool memcheck --error-exitcode 9 build-device/tests/cuda_moe_gemm_test \
    --gtest_filter='*OddShapeEveryTokenTile*' >"$OUT/sanitizer_moe_gemm.log" 2>&1
  echo "== compute-sanitizer memcheck (moe gemm): rc=$? $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer_moe_gemm.log" | tail -1)"
fi

# Decode benchmark, random 20b weights generated on the GPU.
BIN=build-device/mxserve
timeout 300 $BIN bench decode --preset 20b --batch "${MXS_BATCHES:-1,8,32,64,128,256}" --context 1024 \
  --json "$OUT/bench_decode_20b.json" >"$OUT/bench_decode_20b.md" 2>"$OUT/bench_decode_20b.err"
echo "== bench decode rc=$?"; cat "$OUT/bench_decode_20b.md"; tail -5 "$OUT/bench_decode_20b.err"
# gpt-oss-120b by the same code (random weights on the GPU, ~65 GB: H200, or H100 80GB with a small KV pool).
timeout 240 $BIN bench decode --preset 120b --batch 1,8,64 --context 1024 --json "$OUT/bench_decode_120b.json" \
  >"$OUT/bench_decode_120b.md" 2>"$OUT/bench_decode_120b.err"
echo "== bench decode 120b rc=$?"; grep -E "^\| [0-9]|card" "$OUT/bench_decode_120b.md"; tail -3 "$OUT/bench_decode_120b.err"

# Batch 1, same binary and call: the session's A/B switches (MXS_AB: space-separated VAR=VALUE, default the
# norm + router fusion) on 20b and 120b, and each 20b kernel's marginal cost in the graph chain
# (MXS_REPEAT_KERNEL=K:3: (step with K launched 3 times - step) / 2 / 24 layers).
step1() { env $2 $BIN bench decode --preset $1 --batch 1 --context 1024 --steps 64 2>/dev/null | awk -F'|' '/^\| 1 \|/ {gsub(/ /,"",$3); print $3}'; }
{
  echo "| preset | switch | step ms with | step ms without (default) |"; echo "|---|---|---:|---:|"
  for preset in 20b 120b; do
    for ab in ${MXS_AB:-MXS_NO_ROUTER_NORM=1}; do echo "| $preset | $ab | $(step1 $preset $ab) | $(step1 $preset X=1) |"; done
  done
  base=$(step1 20b X=1)
  echo; echo "20b batch-1 step: $base ms; marginal cost of one more launch of each kernel (us):"; echo
  echo "| kernel | us |"; echo "|---|---:|"
  for k in qkv_rope attention_decode o_proj_residual moe_router_norm moe_gemv_mxfp4_gate_up moe_gemv_mxfp4_down; do
    t=$(step1 20b MXS_REPEAT_KERNEL=$k:3)
    echo "| $k | $(python3 -c "print(round(($t - $base) * 1000 / 2 / 24, 1))" 2>/dev/null) |"
  done
} >"$OUT/batch1_ab.md" 2>&1
echo "== batch-1 A/B and marginal costs"; cat "$OUT/batch1_ab.md"

# The floor of those kernels: one PDL-chained launch that only streams the same bytes.
timeout 120 $BIN bench kernel stream-read --json "$OUT/bench_stream_read.json" >"$OUT/bench_stream_read.md" 2>&1
echo "== bench kernel stream-read rc=$?"; grep -E "^\||^empty" "$OUT/bench_stream_read.md"
# The dense projections of decode steps: cuBLAS as called vs the best cuBLASLt algorithm (weights from DRAM).
timeout 120 $BIN bench kernel dense-gemm --rows 8,64,256 --iters 20 --json "$OUT/bench_dense_gemm.json" \
  >"$OUT/bench_dense_gemm.md" 2>&1
echo "== bench kernel dense-gemm rc=$?"; grep -E "^\|" "$OUT/bench_dense_gemm.md" | head -16

# Prefill (TTFT per prompt length) and the MXFP4 grouped GEMM vs cuBLAS bf16, random 20b weights.
timeout 300 $BIN bench prefill --preset 20b --prompt "${MXS_PROMPTS:-512,1024,2048,8192,32768}" --json "$OUT/bench_prefill.json" \
  >"$OUT/bench_prefill.md" 2>"$OUT/bench_prefill.err"
echo "== bench prefill rc=$?"; grep -E "^\||card" "$OUT/bench_prefill.md"; tail -3 "$OUT/bench_prefill.err"
for which in gate_up down; do
  timeout 240 $BIN bench kernel moe-gemm --which $which --P "${MXS_GEMM_P:-32,128,512,1024,4096,8192,16384}" \
    --json "$OUT/bench_moe_gemm_$which.json" >"$OUT/bench_moe_gemm_$which.md" 2>&1
  echo "== bench kernel moe-gemm --which $which rc=$?"; grep -E "^\|" "$OUT/bench_moe_gemm_$which.md" | head -10
done
# The other bf16 reference issue #5 names: PyTorch's grouped GEMM (the device has PyTorch), same shapes and P.
if python3 -c "import torch" 2>/dev/null; then
  timeout 240 python3 scripts/bench_torch_grouped_mm.py --P "${MXS_GEMM_P:-32,128,512,1024,4096,8192,16384}" \
    --json "$OUT/bench_torch_grouped_mm.json" >"$OUT/bench_torch_grouped_mm.md" 2>&1
  echo "== torch._grouped_mm (bf16 reference) rc=$?"; grep -E "^\|" "$OUT/bench_torch_grouped_mm.md"
fi
# Prefill attention per layer: the wgmma kernel (tile 16 / 32) and the mma.sync kernel's default tiles.
timeout 120 build-device/tests/cuda_attention_prefill_test --gtest_filter='*Bench*' >"$OUT/bench_attention_prefill.txt" 2>&1
echo "== attention prefill kernels rc=$? (ms per layer, 64 q / 8 kv heads)"
grep -E "bench prefill .*(wgmma|mma   tq (16|32) kt   0)" "$OUT/bench_attention_prefill.txt" | head -40

if [ "${MXS_CHECK_CKPT:-0}" = 1 ]; then
  timeout 240 $BIN mkmodel --preset 20b --seed 1 --tokenizer .carry/tokenizer.json --out /tmp/m20b >"$OUT/mkmodel.log" 2>&1
  echo "== mkmodel 20b rc=$? $(tail -1 "$OUT/mkmodel.log")"
  cat /tmp/m20b/*.safetensors >/dev/null  # page cache
  MXSERVE_TEST_20B_DIR=/tmp/m20b timeout 240 build-device/tests/cuda_runner_test --gtest_filter='CudaRunner20b.*' \
    >"$OUT/test_20b.log" 2>&1
  echo "== 20b vs CPU reference rc=$?"; grep -E "^step [0-9]|top-1 mismatches|OK|FAILED|Failure|exceeds|exception" "$OUT/test_20b.log" | head -16
  timeout 200 $BIN bench decode --model /tmp/m20b --batch 1,64 --context 1024 --steps 16 \
    --json "$OUT/bench_decode_ckpt.json" >"$OUT/bench_decode_ckpt.md" 2>"$OUT/bench_decode_ckpt.err"
  echo "== bench decode --model (mkmodel 20b) rc=$?"; head -8 "$OUT/bench_decode_ckpt.md"; grep -E "weights on the GPU" "$OUT/bench_decode_ckpt.err"
  timeout 120 $BIN generate --model /tmp/m20b --backend cuda --max-tokens 32 --temperature 0 --raw -p "Hello" >"$OUT/generate.log" 2>&1
  echo "== generate --backend cuda (mkmodel 20b) rc=$?"; tail -6 "$OUT/generate.log"
  timeout 60 $BIN generate --backend cuda --max-tokens 32 --temperature 0 --raw -p "Hello" >"$OUT/generate_tiny.log" 2>&1
  echo "== generate --backend cuda (tiny demo) rc=$?"; tail -4 "$OUT/generate_tiny.log"
fi

if [ "${MXS_CHECK_CKPT:-0}" = 1 ]; then
  # Engine throughput, server time to ready, HTTP load with bad requests alongside (scripts/device-serve.sh).
  OUT="$OUT" bash scripts/device-serve.sh "$BIN" /tmp/m20b
fi

# Tokenizer vectors with Python HF tokenizers (the GPU machine has them): compare with tests/data.
if python3 -c "import tokenizers" 2>/dev/null; then
  python3 tools/reference/tokenizer_vectors.py .carry/tokenizer.json -o "$OUT/tokenizer_vectors_py.jsonl" >"$OUT/tokvec.log" 2>&1
  python3 - "$OUT/tokenizer_vectors_py.jsonl" tests/data/tokenizer_vectors.jsonl <<'PY'
import json, sys
def load(p):
    return {r["text"]: r["ids"] for r in map(json.loads, open(p)) if "text" in r}
a, b = load(sys.argv[1]), load(sys.argv[2])
same = sum(1 for t in b if a.get(t) == b[t])
print(f"== tokenizer vectors: python HF tokenizers vs tests/data: {same}/{len(b)} identical")
PY
fi

# One summary table: every figure against its target (issue targets; H100 targets unless stated).
python3 - "$OUT" "$(cat "$OUT/card.txt" 2>/dev/null | cut -d, -f1)" "${MXSERVE_COMMIT:-unknown}" <<'PY' | tee "$OUT/summary.md"
import json, os, sys
out, card, commit = sys.argv[1], sys.argv[2], sys.argv[3]
h200 = "H200" in card
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
rows = []
d = load("bench_decode_20b.json")
if d:
    by = {r["batch"]: r for r in d["rows"]}
    if 1 in by:
        rows.append(("decode batch 1, 1k ctx (tok/s)", f'{by[1]["tok_s"]:.0f} ({100 * by[1]["copy_fraction"]:.0f}% of copy BW)',
                     ">= 930" if h200 else ">= 650"))
    if 64 in by:
        rows.append(("decode batch 64 (tok/s)", f'{by[64]["tok_s"]:.0f}', ">= 8000 (H100)"))
d120 = load("bench_decode_120b.json")
if d120:
    for r in d120["rows"]:
        rows.append((f'120b decode batch {r["batch"]} (tok/s)', f'{r["tok_s"]:.0f} ({100 * r["copy_fraction"]:.0f}% of copy BW)', ""))
pf = load("bench_prefill.json")
if pf:
    for r in pf["rows"]:
        tgt = "TTFT <= 30 ms" if r["prompt"] == 1024 else ">= 50000 tok/s" if r["prompt"] == 2048 else ""
        rows.append((f'prefill {r["prompt"]} tokens: TTFT ms / tok/s', f'{r["ttft_ms"]:.1f} / {r["tok_s"]:.0f}', tgt))
t = load("bench_throughput.json")
eng64 = None
if t:
    for r in t["results"]:
        rows.append((f'engine throughput c={r["concurrency"]} (out tok/s)', f'{r["output_tok_per_s"]:.1f}',
                     ">= 8000 at c=64 (1k/1k)" if r["concurrency"] == 64 else ""))
        if r["concurrency"] == 64:
            eng64 = r["output_tok_per_s"]
t2 = load("bench_throughput_1k1k.json")
if t2:
    for r in t2["results"]:
        rows.append((f'engine throughput 1k/1k c={r["concurrency"]} (out tok/s)', f'{r["output_tok_per_s"]:.1f}',
                     ">= 8000 (H100)" if r["concurrency"] == 64 else ">= 15000 (H100, saturation)"))
s1 = load("bench_serve_c1.json")
if s1:
    for lv in s1["levels"]:
        rows.append(("serve c=1: out tok/s, TTFT median ms", f'{lv["output_throughput"]:.1f}, {lv["ttft"]["median_ms"]:.1f}', ""))
s = load("bench_serve.json")
if s:
    for lv in s["levels"]:
        over = f' ({100 * (1 - lv["output_throughput"] / eng64):.1f}% below the engine)' if eng64 and lv["concurrency"] == 64 else ""
        rows.append((f'serve c={lv["concurrency"]} (out tok/s)', f'{lv["output_throughput"]:.1f}{over}, failed {lv["failed"]}',
                     "overhead <= 5%"))
try:
    rows.append(("serve 20b time to ready (s)", open(os.path.join(out, "ready_s.txt")).read().strip(), "<= 10"))
except Exception:
    pass
# MXFP4 grouped GEMM against the best bf16 grouped GEMM: the faster of mxserve's cuBLAS forms (its bench) and
# torch._grouped_mm (scripts/bench_torch_grouped_mm.py), per GEMM and P.
tg = load("bench_torch_grouped_mm.json")
torch_ms = {(r["which"], r["P"]): r.get("ms_grouped_mm") for r in (tg["rows"] if tg else [])}
for which in ("gate_up", "down"):
    g = load(f"bench_moe_gemm_{which}.json")
    if not g:
        continue
    for r in g["rows"]:
        cands = [("cuBLAS", r["ms_bf16"])]
        tms = torch_ms.get((which, r["P"]))
        if tms:
            cands.append(("torch", tms))
        name, best = min(cands, key=lambda c: c[1])
        tgt = ">= 1.7x" if r["P"] <= 4096 else ">= 1x, >= 550 TFLOP/s" if r["P"] >= 8192 else ">= 1x"
        rows.append((f'moe-gemm {which} P={r["P"]}: ms, x best bf16 ({name}), TFLOP/s',
                     f'{r["ms_mxfp4"]:.3f}, {best / r["ms_mxfp4"]:.2f}x ({best:.3f}), {r["tflops_mxfp4"]:.0f}', tgt))
print(f"\n## device-check summary: {card}, commit {commit}\n")
print("| figure | measured | target |\n|---|---|---|")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} |")
PY

# The device tool returns at most 8 files: every log and result goes into one archive; the summary table and
# the decode/prefill tables stay beside it. (Write anything else of yours to $OUT before calling this script.)
(cd "$OUT" && tar czf /tmp/mxs-logs.tgz --exclude='*.tgz' . && find . -maxdepth 1 -type f ! -name summary.md \
  ! -name bench_decode_20b.md ! -name bench_prefill.md -delete && mv /tmp/mxs-logs.tgz logs.tgz) 2>/dev/null
echo "== logs: $OUT/logs.tgz"
