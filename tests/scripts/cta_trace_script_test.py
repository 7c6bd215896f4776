#!/usr/bin/env python3
"""scripts/cta_trace.py on a synthetic CTA trace whose phases are known: every launch is placed 2 us before its
wait returns, released 0.7 us after its predecessor's last CTA, runs 5 us plus 10 ns per CTA index, and the router's
CTAs mark 1 us before their end. The per-kernel medians (and --dist's percentiles) must come back exactly, with
the LM head traced and without it (a greedy step's screen has no trace hooks: the steps split at the q/k/v launches).
Usage: cta_trace_script_test.py PATH/TO/cta_trace.py (ctest passes it)."""
import contextlib
import importlib.util
import io
import os
import sys
import tempfile

KERNELS = [(1, 8), (2, 4), (3, 6), (4, 4), (5, 8), (6, 10)]  # (id, CTAs) of one layer, in stream order


def synthetic_csv(path, lm_head, layers=3):
    rows, t = ["kernel,cta,sm,t_start,t_wait,t_end,t_mark"], 100000
    for _step in range(2):
        for _layer in range(layers):
            for k, n in KERNELS:
                t += 700  # release after the predecessor's last end
                for c in range(n):
                    end = t + 5000 + 10 * c
                    mark = end - 1000 if k == 4 else -1
                    rows.append(f"{k},{c},{c},{t - 2000},{t + (100 if c else 0)},{end},{mark}")
                t += 5000 + 10 * (n - 1)
        t += 700
        for c in range(20 if lm_head else 0):  # the LM head
            rows.append(f"7,{c},{c},{t - 500},{t},{t + 100000 + c},-1")
        t += 100000 + 19 + 50000
    with open(path, "w") as f:
        f.write("\n".join(rows) + "\n")


def check(mod, lm_head):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.csv")
        synthetic_csv(path, lm_head)
        out = io.StringIO()
        sys.argv = ["cta_trace.py", path, "--dist"]
        with contextlib.redirect_stdout(out):
            mod.main()
    table, dist = {}, {}
    for line in out.getvalue().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 11 and cells[0] in mod.NAMES.values():
            table[cells[0]] = cells
        if len(cells) == 5 and cells[0] in mod.NAMES.values():
            dist[cells[0]] = cells
    failures = []
    # --dist, pooled over the 3 launches: waits 0 (CTA 0) and 0.1 us, ends 5 us + 10 ns per CTA, the router's marks
    # 1 us before its ends (p10 / p50 / p90 / max; the router: 4 CTAs, q/k/v: 8).
    want_dist = {"router_norm": ["0.00/0.10/0.10/0.10", "3.91/3.93/4.00/4.00", "1.00/1.00/1.00/1.00",
                                 "5.00/5.02/5.03/5.03"],
                 "qkv_rope": ["0.00/0.10/0.10/0.10", "nan", "nan", "5.00/5.04/5.07/5.07"]}
    for name, want in want_dist.items():
        got = dist.get(name, [name, "missing"])[1:]
        if got != want:
            failures.append(f"--dist {name}: {got} (want {want})")
    for k, n in KERNELS:
        name = mod.NAMES[k]
        row = table.get(name)
        if row is None:
            failures.append(f"{name}: no row")
            continue
        expect = {1: "3", 2: str(n), 3: str(n), 4: "2.00", 5: "0.70", 6: f"{(5000 + 10 * (n - 1)) / 1e3:.2f}",
                  7: f"{10 * (n - 1 - n // 2) / 1e3:.2f}", 8: f"{(700 + 5000 + 10 * (n - 1)) / 1e3:.2f}"}
        if k == 4:
            expect[9], expect[10] = f"{(4000 + 10 * (n - 1)) / 1e3:.2f}", "1.00"
        for col, want in expect.items():
            if row[col] != want:
                failures.append(f"{name} column {col}: {row[col]} (want {want})")
    if failures:
        print(out.getvalue())
        print("\n".join(f"(LM head traced: {lm_head}) {f}" for f in failures))
        return 1
    print(f"cta_trace.py (LM head traced: {lm_head}): {len(table)} kernel rows and {len(dist)} distribution rows as expected")
    return 0


def main():
    spec = importlib.util.spec_from_file_location("cta_trace", sys.argv[1])
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = sys.argv
    failed = 0
    for lm_head in (True, False):
        failed |= check(mod, lm_head)
        sys.argv = argv
    return failed


if __name__ == "__main__":
    sys.exit(main())
