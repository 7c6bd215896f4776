#!/usr/bin/env python3
"""bf16 reference for `mxserve bench kernel moe-gemm`: PyTorch's grouped GEMM (torch._grouped_mm) and a
per-expert matmul loop on the 20b MoE shapes (32 experts, top-4 routing drawn uniformly at random, as the
mxserve bench routes), on the GPU this runs on. Issue #5 asks for the MXFP4 grouped GEMM against the best bf16
grouped GEMM of cuBLAS and torch._grouped_mm; the mxserve bench times cuBLAS itself, this script the torch side
(the device has PyTorch; the C++ build does not link it). Timing: CUDA events, warmup, then 3 rounds of --iters
launches, median round.

Usage: python3 scripts/bench_torch_grouped_mm.py [--P 32,128,...] [--routing random|balanced] [--iters 50] [--json FILE]
Prints a markdown table (ms, TFLOP/s) per GEMM and P."""
import argparse
import json
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--P", default="32,128,512,1024,4096,8192,16384", help="token-expert pairs (comma-separated)")
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--routing", default="random", choices=("random", "balanced"),
                    help="random: each token's experts drawn uniformly; balanced: pair p -> expert p mod 32")
    ap.add_argument("--json", default="", help="also write the results here")
    args = ap.parse_args()
    try:
        import torch
    except ImportError:
        print("bench_torch_grouped_mm: PyTorch is not installed", file=sys.stderr)
        return 2
    if not torch.cuda.is_available():
        print("bench_torch_grouped_mm: no CUDA device", file=sys.stderr)
        return 2
    dev, n_experts, top_k = "cuda", 32, 4
    gen = torch.Generator(device="cpu").manual_seed(1)

    def timed(fn):
        for _ in range(args.warmup):
            fn()
        torch.cuda.synchronize()
        start, stop, rounds = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True), []
        for _ in range(3):
            start.record()
            for _ in range(args.iters):
                fn()
            stop.record()
            torch.cuda.synchronize()
            rounds.append(start.elapsed_time(stop) / args.iters)
        return sorted(rounds)[1]

    results = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "routing": args.routing, "rows": []}
    print(f"torch {torch.__version__} on {results['device']}; bf16, {n_experts} experts, top-{top_k}, {args.routing} "
          "routing\n")
    print("| GEMM | P | active experts | torch._grouped_mm ms | TFLOP/s | per-expert loop ms | TFLOP/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for which, n_out, k in (("gate_up", 5760, 2880), ("down", 2880, 2880)):
        w = torch.randn(n_experts, n_out, k, device=dev, dtype=torch.bfloat16) * 0.02
        wt = w.transpose(-2, -1)  # [E, K, N]: each expert's weights column-major, as grouped_mm wants them
        for p in (int(v) for v in args.P.split(",")):
            tokens = max(1, p // top_k)
            if args.routing == "balanced":  # as `mxserve bench kernel moe-gemm --routing balanced`
                choice = torch.arange(tokens * top_k).reshape(tokens, top_k) % n_experts
            else:
                choice = torch.stack([torch.randperm(n_experts, generator=gen)[:top_k] for _ in range(tokens)])
            counts = torch.bincount(choice.flatten(), minlength=n_experts)[:n_experts]
            pairs = int(counts.sum())
            offs = counts.cumsum(0).to(torch.int32).to(dev)
            x = torch.randn(pairs, k, device=dev, dtype=torch.bfloat16)
            flops = 2.0 * pairs * n_out * k
            row = {"which": which, "P": pairs, "active_experts": int((counts > 0).sum())}
            try:
                row["ms_grouped_mm"] = timed(lambda: torch._grouped_mm(x, wt, offs=offs))
            except Exception as ex:  # older PyTorch: no grouped_mm for this device or layout
                row["ms_grouped_mm"] = None
                row["grouped_mm_error"] = f"{type(ex).__name__}: {ex}"[:200]
            chunks = list(torch.split(x, counts.tolist()))
            row["ms_loop"] = timed(lambda: [c @ wt[i] for i, c in enumerate(chunks) if c.shape[0] > 0])
            results["rows"].append(row)
            g = row["ms_grouped_mm"]
            gs = f"{g:.3f} | {flops / g / 1e9:.0f}" if g else "n/a | -"
            print(f"| {which} | {pairs} | {row['active_experts']} | {gs} | {row['ms_loop']:.3f} | "
                  f"{flops / row['ms_loop'] / 1e9:.0f} |", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
