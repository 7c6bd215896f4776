#!/usr/bin/env python3
"""HF compatibility proof for `mxserve mkmodel` checkpoints (issue 2, item 9), run on the GPU machine.

Loads a mkmodel folder with transformers exactly as the reference configuration of gpt-oss-spec.md §0 does
(bf16, eager attention, Mxfp4Config(dequantize=True), CUDA), checks that transformers' dequantized expert weights
equal an independent numpy decode of the MXFP4 blocks/scales in the safetensors (nibble order, e8m0 scale,
[E, in, out] transpose), runs one forward pass on a few token ids and prints the logits' shape, finiteness and a
few values. Exit status: 0 = loaded and all logits finite, 1 = non-finite logits or a weight mismatch.

    python3 tools/reference/hf_load_check.py /path/to/mkmodel-folder [--tokens 200006,17360,200008,12194]
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, Mxfp4Config

# e2m1 code -> value (gpt-oss-spec.md §2.3)
E2M1 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0],
                dtype=np.float32)


def read_tensor(folder, name):
    """One tensor from the sharded checkpoint, via the index, with the safetensors numpy API."""
    from safetensors import safe_open  # imported late: only needed for the weight check

    with open(os.path.join(folder, "model.safetensors.index.json")) as f:
        shard = json.load(f)["weight_map"][name]
    with safe_open(os.path.join(folder, shard), framework="pt") as f:  # numpy has no bfloat16: go through torch
        return f.get_tensor(name).numpy()


def decode_mxfp4(blocks, scales):
    """[E, rows, in/32, 16] u8 + [E, rows, in/32] u8 -> [E, rows, in] float32 (low nibble = even element)."""
    lo = E2M1[blocks & 0x0F]
    hi = E2M1[blocks >> 4]
    vals = np.stack([lo, hi], axis=-1).reshape(*blocks.shape[:-1], 32)  # [E, rows, in/32, 32]
    vals = vals * np.exp2(scales.astype(np.float32) - 127.0)[..., None]
    return vals.reshape(blocks.shape[0], blocks.shape[1], -1)


def check_experts(model, folder, layer=0):
    """transformers' dequantized gate_up/down of one layer vs our numpy decode. Returns False on mismatch."""
    experts = model.model.layers[layer].mlp.experts
    ok = True
    for proj in ("gate_up_proj", "down_proj"):
        ours = decode_mxfp4(read_tensor(folder, f"model.layers.{layer}.mlp.experts.{proj}_blocks"),
                            read_tensor(folder, f"model.layers.{layer}.mlp.experts.{proj}_scales"))  # [E, out, in]
        theirs = getattr(experts, proj, None)
        if theirs is None or not isinstance(theirs, torch.Tensor):
            print(f"weights: layer {layer} {proj}: no dequantized parameter on the module, skipped")
            continue
        theirs = theirs.detach().float().cpu().numpy()
        # transformers 4.55-4.57 and v5 eager store [E, in, out] (x @ W); accept [E, out, in] too.
        if theirs.shape == ours.transpose(0, 2, 1).shape:
            ours_cmp = ours.transpose(0, 2, 1)
        elif theirs.shape == ours.shape:
            ours_cmp = ours
        else:
            print(f"weights: layer {layer} {proj}: shape {theirs.shape} vs decoded {ours.shape}: MISMATCH")
            ok = False
            continue
        equal = np.array_equal(theirs, ours_cmp)
        print(f"weights: layer {layer} {proj} {list(theirs.shape)}: dequantized by transformers "
              f"{'==' if equal else '!='} numpy decode of blocks/scales"
              + ("" if equal else f" (max abs diff {np.abs(theirs - ours_cmp).max():.3g})"))
        ok = ok and equal
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", help="checkpoint folder written by `mxserve mkmodel`")
    ap.add_argument("--tokens", default="200006,17360,200008,12194,13,200007,200006,173781,200005,35644",
                    help="comma-separated token ids (default: a short harmony-style prompt)")
    args = ap.parse_args()

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'none'}")
    model = AutoModelForCausalLM.from_pretrained(
        args.folder,
        dtype=torch.bfloat16,
        attn_implementation="eager",
        quantization_config=Mxfp4Config(dequantize=True),
        device_map="cuda",
    )
    model.eval()
    cfg = model.config
    print(f"loaded {args.folder}: {cfg.num_hidden_layers} layers, hidden {cfg.hidden_size}, "
          f"{cfg.num_local_experts} experts top-{cfg.num_experts_per_tok}, vocab {cfg.vocab_size}")

    weights_ok = check_experts(model, args.folder)

    ids = [int(t) for t in args.tokens.split(",")]
    ids = [t % cfg.vocab_size for t in ids]
    with torch.no_grad():
        logits = model(torch.tensor([ids], device="cuda")).logits.float()
    finite = bool(torch.isfinite(logits).all())
    last = logits[0, -1]
    print(f"logits: shape {list(logits.shape)}, dtype of model {next(model.parameters()).dtype}, "
          f"all finite: {finite}")
    print(f"logits: mean {logits.mean().item():.4f}, std {logits.std().item():.4f}, "
          f"max |x| {logits.abs().max().item():.4f}")
    print("last position, first 8:", [round(v, 4) for v in last[:8].tolist()])
    print("last position, top-5 ids:", torch.topk(last, 5).indices.tolist())
    if not finite:
        print("FAIL: non-finite logits", file=sys.stderr)
        return 1
    if not weights_ok:
        print("FAIL: transformers' dequantized experts differ from the MXFP4 decode", file=sys.stderr)
        return 1
    print("OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
