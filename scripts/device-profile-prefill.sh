#!/usr/bin/env bash
# On the GPU machine, after a build (scripts/device-setup.sh): where one prefill's device time goes, with Nsight
# Compute (nsys is not usable there). Profiles every launch of the first (warm-up) prefill of `bench prefill`
# at MXS_PROFILE_PROMPT tokens (default 2048; one step while it is <= --chunk) in isolation, with a few cheap
# metrics (duration, DRAM bytes, SM throughput, grid, registers), summed per kernel name. Durations are in
# isolation (each launch replayed alone, caches flushed between passes: --cache-control all), so they are upper
# bounds of the in-stream times. Then, if MXS_NCU_DETAIL is a regex, a --set full report of one launch of each
# matching kernel (key lines printed). Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/ncu-env.sh
P=${MXS_PROFILE_PROMPT:-2048}
# Load-time kernels come first: the expert pack (2 launches per layer, matched by "moe") is dropped below by
# starting at the first launch after it (the embedding). ~10 launches per layer: the default MXS_NCU_LAUNCHES covers the
# pack and the first ~10 layers (sliding and full alternate), enough for per-launch figures in one short call;
# ~350 cover a whole 24-layer step with the LM head and sampling.
KERNELS='regex:embed|qkv|attention|gemv|moe|rmsnorm|sampl|gemm|cublas|Kernel|sm90|nvjet|cutlass|rope|argmax|gather|combine|router|splitK|reduce'
timeout "${MXS_NCU_TIMEOUT:-150}" "$NCU" --clock-control none --csv --page raw --print-units base -k "$KERNELS" \
  --launch-count "${MXS_NCU_LAUNCHES:-160}" \
  --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,sm__throughput.avg.pct_of_peak_sustained_elapsed,launch__grid_size,launch__registers_per_thread \
  $BIN bench prefill --preset 20b --prompt "$P" --reps 1 --breakdown 0 >"$OUT/ncu_prefill.csv" 2>"$OUT/ncu_prefill.err"
python3 - "$OUT/ncu_prefill.csv" "$P" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
try:
    hdr = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
except StopIteration:
    print("device-profile-prefill: no ncu rows (see ncu_prefill.err)"); sys.exit(0)
h = rows[hdr]; data = rows[hdr + 2:]
col = {n: h.index(n) for n in h}
def short(r):
    n = r[col["Kernel Name"]].split("(")[0].replace("void ", "").replace("mxs::cuda::", "").replace("(anonymous namespace)::", "").strip()
    return n[:80]
def num(r, k):
    return float(r[col[k]].replace(",", "") or 0)
# One step: from the first launch after the load-time pack (the embedding gather + norm) to its next launch.
names = [short(r) for r in data]
first = next((n for n in names if "pack" not in n), None)
starts = [i for i, n in enumerate(names) if n == first]
if starts:
    end = starts[1] if len(starts) > 1 else len(data)
    data = data[starts[0]:end]
agg = collections.OrderedDict()
for r in data:
    a = agg.setdefault(short(r), [0, 0.0, 0.0, 0.0, r[col["launch__grid_size"]], r[col["launch__registers_per_thread"]]])
    a[0] += 1
    ns = num(r, "gpu__time_duration.sum")
    a[1] += ns
    a[2] += num(r, "dram__bytes_read.sum") + num(r, "dram__bytes_write.sum")
    a[3] += num(r, "sm__throughput.avg.pct_of_peak_sustained_elapsed") * ns
print(f"## {sys.argv[2]}-token prefill: kernels of the first step in isolation (ncu, {len(data)} launches)")
print("| kernel | launches | ms | us/launch | DRAM GB/s | SM % (time-weighted) | grid | regs |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
tot = 0.0
for n, (cnt, ns, by, smw, grid, regs) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    tot += ns
    print(f"| {n} | {cnt} | {ns/1e6:.3f} | {ns/cnt/1e3:.1f} | {by/ns if ns else 0:.0f} | {smw/ns if ns else 0:.0f} | {grid} | {regs} |")
print(f"| total | {len(data)} | {tot/1e6:.3f} | | | | | |")
PY
if [ -n "${MXS_NCU_DETAIL:-}" ]; then
  timeout "${MXS_NCU_DETAIL_TIMEOUT:-120}" "$NCU" --clock-control none --set full -k "regex:${MXS_NCU_DETAIL}" \
    --launch-skip "${MXS_NCU_DETAIL_SKIP:-2}" --launch-count "${MXS_NCU_DETAIL_COUNT:-2}" \
    $BIN bench prefill --preset 20b --prompt "$P" --reps 1 --breakdown 0 >"$OUT/ncu_prefill_detail.txt" 2>&1
  grep -E "^  [a-zA-Z_].*\(|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Waves Per SM|One or More Eligible|Issued Warp|L2 Hit|Compute \(SM\) Throughput|Executed Ipc" "$OUT/ncu_prefill_detail.txt" | head -150
fi
