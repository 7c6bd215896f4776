#!/usr/bin/env bash
# On the GPU machine, after a build (scripts/device-setup.sh): where a decode step's time goes, with Nsight Compute
# (nsys is not usable there). For each batch in MXS_PROFILE_BATCHES (default "1 64"): every launch of the first
# decode steps of `bench decode --no-graphs` in isolation (one cheap pass: duration, DRAM bytes, grid, registers),
# summed per kernel name per step; then a detailed report (--set full, key lines) of one launch of each kernel
# matching MXS_NCU_DETAIL (a regex; default: none); with MXS_NCU_SOURCE (a regex) the SASS lines of one launch of
# that kernel where warps stall most (warp-state sampling: `--page source`), with the source file:line they come
# from (-lineinfo builds). Durations are in isolation: the graph-replayed step is longer by the launch gaps and
# shorter by any overlap. Logs go to $OUT.
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/ncu-env.sh
STEP_KERNELS='regex:qkv|attention|gemv|moe|rmsnorm|sampl|gemm|cublas|Kernel|sm90|rope|argmax'
for B in ${MXS_PROFILE_BATCHES:-1 64}; do
  timeout 300 "$NCU" --clock-control none --csv --page raw --print-units base -k "$STEP_KERNELS" --launch-count 600 \
    --metrics gpu__time_duration.sum,dram__bytes_read.sum,dram__bytes_write.sum,launch__grid_size,launch__registers_per_thread \
    $BIN bench decode --preset 20b --batch "$B" --context 1024 --steps 1 --no-graphs >"$OUT/ncu_b$B.csv" 2>"$OUT/ncu_b$B.err"
  python3 - "$OUT/ncu_b$B.csv" "$B" <<'PY'
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
hdr = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
h = rows[hdr]; data = rows[hdr + 2:]
col = {n: h.index(n) for n in h}
def short(r):
    n = r[col["Kernel Name"]].split("(")[0].replace("void ", "").replace("mxs::cuda::", "").replace("(anonymous namespace)::", "").strip()
    return n[:90]
# Complete steps only: a step starts at each launch of the first kernel seen (the embedding gather).
names = [short(r) for r in data]
first = next(n for n in names if "pack" not in n)  # load-time kernels (the expert pack) come before
starts = [i for i, n in enumerate(names) if n == first]
steps = max(1, len(starts) - 1)
data = data[starts[0]:starts[-1]] if len(starts) > 1 else data
agg = collections.OrderedDict()
for r in data:
    name = short(r)
    a = agg.setdefault(name, [0, 0.0, 0.0, r[col["launch__grid_size"]], r[col["launch__registers_per_thread"]]])
    a[0] += 1
    a[1] += float(r[col["gpu__time_duration.sum"]].replace(",", ""))  # ns
    a[2] += float(r[col["dram__bytes_read.sum"]].replace(",", "")) + float(r[col["dram__bytes_write.sum"]].replace(",", ""))
print(f"## batch {sys.argv[2]}: kernels of one step in isolation (ncu; {steps} step(s) profiled)")
print("| kernel | launches/step | us/step | us/launch | GB/s | grid | regs |")
tot = 0.0
for n, (cnt, ns, by, grid, regs) in sorted(agg.items(), key=lambda kv: -kv[1][1]):
    tot += ns / steps
    print(f"| {n} | {cnt/steps:.0f} | {ns/steps/1e3:.1f} | {ns/cnt/1e3:.2f} | {by/ns if ns else 0:.0f} | {grid} | {regs} |")
print(f"| total | | {tot/1e3:.1f} | | | | |")
PY
done
if [ -n "${MXS_NCU_DETAIL:-}" ]; then
  timeout 300 "$NCU" --clock-control none --set full -k "regex:${MXS_NCU_DETAIL}" --launch-skip 30 --launch-count "${MXS_NCU_DETAIL_COUNT:-3}" \
    $BIN bench decode --preset 20b --batch "${MXS_NCU_DETAIL_BATCH:-1}" --context 1024 --steps 1 --no-graphs >"$OUT/ncu_detail.txt" 2>&1
  grep -E "^  [a-z_]+.*\(|Duration|DRAM Throughput|Memory Throughput|Achieved Occupancy|Theoretical Occupancy|Registers Per|Block Limit|Waves Per SM|Stall|One or More Eligible|Issued Warp|L2 Hit|Compute \(SM\) Throughput|Executed Ipc" "$OUT/ncu_detail.txt" | head -120
fi
if [ -n "${MXS_NCU_SOURCE:-}" ]; then
  rm -f "$OUT/ncu_source.ncu-rep"
  timeout 300 "$NCU" --clock-control none --set full --import-source yes -k "regex:${MXS_NCU_SOURCE}" --launch-skip 30 \
    --launch-count 1 -o "$OUT/ncu_source" $BIN bench decode --preset 20b --batch "${MXS_NCU_DETAIL_BATCH:-1}" \
    --context 1024 --steps 1 --no-graphs >"$OUT/ncu_source.log" 2>&1
  "$NCU" -i "$OUT/ncu_source.ncu-rep" --page source --csv --print-source sass >"$OUT/ncu_source_sass.csv" 2>"$OUT/ncu_source.err" ||
    { echo "ncu --page source failed:"; tail -5 "$OUT/ncu_source.err"; }
  python3 - "$OUT/ncu_source_sass.csv" <<'PY'
import csv, sys
rows = [r for r in csv.reader(open(sys.argv[1])) if r]
hdr = next((i for i, r in enumerate(rows) if any("Source" in c for c in r)), None)
if hdr is None:
    sys.exit("no source table in " + sys.argv[1])
h = rows[hdr]
def find(*keys):
    return next((i for i, c in enumerate(h) if all(k.lower() in c.lower() for k in keys)), None)
stall = find("stall", "sampl", "not issued") or find("stall", "sampl") or find("sampl")
src = find("source")
if stall is None:
    sys.exit("no stall-sampling column; columns: " + ", ".join(h))
def num(x):
    try: return float(x.replace(",", ""))
    except ValueError: return 0.0
data = rows[hdr + 1:]
total = sum(num(r[stall]) for r in data if len(r) > stall) or 1.0
print(f"## top SASS lines by '{h[stall]}' ({total:.0f} samples)")
for r in sorted((r for r in data if len(r) > stall), key=lambda r: -num(r[stall]))[:25]:
    print(f"{100 * num(r[stall]) / total:5.1f}%  {r[src][:110] if src is not None else ''}")
PY
fi
