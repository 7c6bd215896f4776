#!/usr/bin/env python3
"""Per-layer phase tables from a CTA trace (`bench decode` with MXS_CTA_TRACE_OUT in a -DMXS_CTA_TRACE=ON build).

Input CSV rows: kernel,cta,sm,t_start,t_wait,t_end,t_mark (ns; one row per CTA, -1: not reached / not marked;
src/cuda/kernels/cta_trace.cuh). The trace
holds two batch-1 steps; the tables describe the last one. Per launch (in stream order):
  ctas      CTAs recorded
  placed    CTAs that started >= 0.25 us before the launch's first griddepcontrol.wait return (resident early)
  lead      first CTA start -> first wait return (us): how far ahead of its release the launch was placed
  release   predecessor's last CTA end -> this launch's first wait return (us)
  run       first wait return -> last CTA end (us)
  tail      median CTA end -> last CTA end (us)
  step      predecessor's last CTA end -> this launch's last CTA end (us): the launch's share of the step
  mark      first wait return -> the last marked CTA's mark (us; kernels with a CtaTrace::mark(), else nan)
  mark_end  the longest mark -> end of a marked CTA (us): e.g. the router's routing after its cluster barrier
With --dist, per kernel also the distribution over its CTAs (p10 / p50 / p90 / max, pooled over the step's
launches, us from each launch's first wait return): wait (this CTA's wait return), pro (wait -> mark), post (mark
-> end), end (this CTA's end). E.g. the one-token q/k/v (session 22): waits up to 3.3 us apart, prologue 3.4 us.
Usage: cta_trace.py TRACE.csv [--layers] [--dist]  (--layers also prints every launch of the last step)
"""
import csv
import statistics
import sys

NAMES = {1: "qkv_rope", 2: "attention", 3: "o_proj", 4: "router_norm", 5: "gate_up", 6: "down", 7: "lm_head"}


def launches(rows):
    by_kernel = {}
    for r in rows:
        by_kernel.setdefault(r["kernel"], []).append(r)
    out = []
    for k, rs in by_kernel.items():
        rs.sort(key=lambda r: r["t_wait"])
        cur = [rs[0]]
        for r in rs[1:]:
            if r["t_wait"] - cur[-1]["t_wait"] > 15000:  # launches of one kernel are >= ~50 us apart at batch 1
                out.append((k, cur))
                cur = []
            cur.append(r)
        out.append((k, cur))
    out.sort(key=lambda kc: min(r["t_wait"] for r in kc[1]))
    return out


def describe(k, rs, prev_end):
    w0 = min(r["t_wait"] for r in rs)
    s0 = min(r["t_start"] for r in rs)
    ends = sorted(r["t_end"] for r in rs)
    marked = [r for r in rs if r.get("t_mark", -1) >= 0]
    return {
        "kernel": NAMES.get(k, str(k)), "ctas": len(rs),
        "placed": sum(1 for r in rs if r["t_start"] < w0 - 250),
        "lead": (w0 - s0) / 1e3, "release": (w0 - prev_end) / 1e3 if prev_end is not None else float("nan"),
        "run": (ends[-1] - w0) / 1e3, "tail": (ends[-1] - ends[len(ends) // 2]) / 1e3,
        "step": (ends[-1] - prev_end) / 1e3 if prev_end is not None else float("nan"),
        "mark": (max(r["t_mark"] for r in marked) - w0) / 1e3 if marked else float("nan"),
        "mark_end": max(r["t_end"] - r["t_mark"] for r in marked) / 1e3 if marked else float("nan"),
        "start": s0, "wait": w0, "end": ends[-1],
    }


def main():
    rows = []
    with open(sys.argv[1]) as f:
        for r in csv.DictReader(f):
            rows.append({k: int(v) for k, v in r.items()})
    rows = [r for r in rows if r["t_wait"] >= 0]
    ls = launches(rows)
    # The last step: the launches after the first LM head. A greedy batch-1 step's LM head is the screen
    # (lm_head_screen.cu, no trace hooks): then the step starts at the second half's first q/k/v launch, and
    # the first launch's release includes the LM head between the steps.
    lm = [i for i, (k, _) in enumerate(ls) if k == 7]
    if lm:
        first_lm = lm[0]
    else:
        qkv = [i for i, (k, _) in enumerate(ls) if k == 1]
        first_lm = qkv[len(qkv) // 2] - 1
    step = ls[first_lm + 1:]
    prev_end = max(r["t_end"] for r in ls[first_lm][1])
    descs = []
    for k, rs in step:
        d = describe(k, rs, prev_end)
        descs.append(d)
        prev_end = d["end"]
    t_step = (descs[-1]["end"] - max(r["t_end"] for r in ls[first_lm][1])) / 1e3
    cols = ["ctas", "placed", "lead", "release", "run", "tail", "step", "mark", "mark_end"]
    if "--layers" in sys.argv:
        print("| launch | " + " | ".join(cols) + " |")
        print("|---" * (len(cols) + 1) + "|")
        for d in descs:
            print(f"| {d['kernel']} | " + " | ".join(
                f"{d[c]:.2f}" if isinstance(d[c], float) else str(d[c]) for c in cols) + " |")
    print(f"last step: {len(descs)} launches, {t_step:.1f} us from the previous LM head's end to its own")
    print("| kernel (median over the step's launches) | n | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 2) + "|")
    total = 0.0
    for name in NAMES.values():
        ds = [d for d in descs if d["kernel"] == name]
        if not ds:
            continue
        med = {c: statistics.median(d[c] for d in ds) for c in cols}
        total += sum(d["step"] for d in ds)
        print(f"| {name} | {len(ds)} | " + " | ".join(
            f"{med[c]:.2f}" if c not in ("ctas", "placed") else f"{med[c]:.0f}" for c in cols) + " |")
    print(f"sum of step shares: {total:.1f} us")
    if "--dist" in sys.argv:
        print_distributions(step)


def percentiles(v):
    v = sorted(v)
    if not v:
        return "nan"
    return "/".join(f"{v[min(len(v) - 1, int(q * len(v)))]:.2f}" for q in (0.1, 0.5, 0.9, 1.0))


def print_distributions(step):
    print("| kernel (CTAs of the step's launches) | wait p10/p50/p90/max | pro | post | end |")
    print("|---|---|---|---|---|")
    for k, name in NAMES.items():
        acc = {"wait": [], "pro": [], "post": [], "end": []}
        for kk, rs in step:
            if kk != k:
                continue
            w0 = min(r["t_wait"] for r in rs)
            for r in rs:
                acc["wait"].append((r["t_wait"] - w0) / 1e3)
                acc["end"].append((r["t_end"] - w0) / 1e3)
                if r.get("t_mark", -1) > 0:
                    acc["pro"].append((r["t_mark"] - r["t_wait"]) / 1e3)
                    acc["post"].append((r["t_end"] - r["t_mark"]) / 1e3)
        if acc["end"]:
            print(f"| {name} | " + " | ".join(percentiles(acc[c]) for c in ("wait", "pro", "post", "end")) + " |")


if __name__ == "__main__":
    main()
