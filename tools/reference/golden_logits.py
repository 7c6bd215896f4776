#!/usr/bin/env python3
"""Golden logits of HF transformers for a `mxserve mkmodel --preset tiny` checkpoint -> tests/data/golden_tiny.json.

Runs on the GPU machine (torch 2.11, transformers 5.17, no internet). The reference path is pinned as in
gpt-oss-spec.md §0 / Appendix A: bf16, attn_implementation="eager", experts_implementation="eager" (per-expert
loop, bf16 index_add_ in ascending expert id), Mxfp4Config(dequantize=True). tests/unit/cpu_golden_test.cpp
compares the CPU backend against the file.

    build-cpu/mxserve mkmodel --preset tiny --seed 0 --out /tmp/golden-tiny
    python3 tools/reference/golden_logits.py /tmp/golden-tiny --out tests/data/golden_tiny.json

Prompts are harmony conversations rendered here as text (current hub chat template, fixed date) and encoded
with the folder's tokenizer.json; the file stores the ids, so the C++ test needs no tokenizer.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

DATE = "2025-08-05"  # fixed: the template's strftime_now would change the tokens every day
N_GREEDY = 32
TOP_LAST = 64


def system_message(reasoning="medium"):
    return ("<|start|>system<|message|>You are ChatGPT, a large language model trained by OpenAI.\n"
            "Knowledge cutoff: 2024-06\n"
            f"Current date: {DATE}\n\n"
            f"Reasoning: {reasoning}\n\n"
            "# Valid channels: analysis, commentary, final. Channel must be included for every message.<|end|>")


def developer_message(instructions):
    return f"<|start|>developer<|message|># Instructions\n\n{instructions}\n\n<|end|>"


def user_message(text):
    return f"<|start|>user<|message|>{text}<|end|>"


def assistant_final(text):
    return f"<|start|>assistant<|channel|>final<|message|>{text}<|end|>"


LONG_TEXT = (
    "The lighthouse keeper kept a log of every ship that passed the point. Some nights the fog was so thick "
    "that he could only hear the engines, low and patient, moving north toward the harbor. He wrote down the "
    "time, the direction of the wind, the height of the swell, and whether the bell buoy was ringing. In the "
    "spring the fishing boats came out before dawn, twenty or thirty of them, their lamps strung across the "
    "water like a second coastline. In the autumn the freighters were heavier and slower, riding low with "
    "grain and timber, and their horns answered his own when the visibility dropped below a mile. He counted "
    "the seabirds on the rocks each morning and noted which ones had returned. After eleven years the log "
    "filled fourteen notebooks, and a historian from the university asked whether she could read them. She "
    "found that the dates of the first storms had moved later by almost two weeks over the decade, that the "
    "herring boats had become fewer but larger, and that the keeper had never once missed a night. ")


def prompts():
    """(name, text) of the harmony prompts, each ending with the generation prompt <|start|>assistant."""
    gen = "<|start|>assistant"
    return [
        ("two_plus_two", system_message() + developer_message("You are a helpful assistant.")
         + user_message("What is 2 + 2?") + gen),
        ("haiku_low", system_message("low") + user_message("Write a haiku about the ocean at night.") + gen),
        ("multi_turn", system_message("high") + user_message("Name three primary colors.")
         + assistant_final("Red, yellow and blue.") + user_message("Which of them is the warmest, and why?") + gen),
        # > 128 tokens so that the sliding-window layers drop keys.
        ("long_story", system_message() + user_message(
            "Summarize the following story in two sentences.\n\n" + LONG_TEXT + LONG_TEXT.replace(
                "lighthouse keeper", "harbor master")) + gen),
    ]


def sum64(path):
    """Sum of the file as little-endian u64 words (zero-padded), mod 2^64: the C++ test recomputes it."""
    data = open(path, "rb").read()
    data += b"\0" * ((-len(data)) % 8)
    return int(np.frombuffer(data, dtype="<u8").sum(dtype=np.uint64))


def vector_stats(v):
    """Full-vector statistics of one logits row (fp32 values of the bf16 logits), in float64."""
    v64 = v.double()
    weights = (torch.arange(v.numel(), device=v.device, dtype=torch.float64) % 1009) + 1
    return {
        "sum": float(v64.sum()),
        "sumsq": float((v64 * v64).sum()),
        "max": float(v64.max()),
        "argmax": int(torch.argmax(v)),  # first index on ties
        "checksum": float((v64 * weights).sum()),  # sum_i (i % 1009 + 1) * logit_i
    }


def top2(row):
    vals, ids = torch.topk(row.float(), 2)
    return int(torch.argmax(row)), float(vals[0]), float(vals[1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", help="folder written by `mxserve mkmodel --preset tiny --seed 0`")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "..", "tests", "data",
                                                  "golden_tiny.json"))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    import transformers
    from tokenizers import Tokenizer
    from transformers import AutoModelForCausalLM, Mxfp4Config

    tok = Tokenizer.from_file(os.path.join(args.model_dir, "tokenizer.json"))
    kwargs = dict(dtype=torch.bfloat16, attn_implementation="eager",
                  quantization_config=Mxfp4Config(dequantize=True))
    experts_impl = "eager"
    try:
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, experts_implementation="eager", **kwargs)
    except (TypeError, ValueError) as e:  # older transformers: the per-expert loop is the CPU/training path
        print(f"experts_implementation not accepted ({e}); using the default", file=sys.stderr)
        experts_impl = "default"
        model = AutoModelForCausalLM.from_pretrained(args.model_dir, **kwargs)
    model = model.to(args.device).eval()
    cfg = model.config

    shards = sorted(f for f in os.listdir(args.model_dir) if f.endswith(".safetensors"))
    out = {
        "generator": "tools/reference/golden_logits.py",
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu",
        "attn_implementation": "eager",
        "experts_implementation": experts_impl,
        "date": DATE,
        "model": {
            "preset": "tiny", "seed": 0,
            "vocab_size": cfg.vocab_size, "hidden_size": cfg.hidden_size, "num_layers": cfg.num_hidden_layers,
            "safetensors_sum64": {f: str(sum64(os.path.join(args.model_dir, f))) for f in shards},
        },
        "notes": "top1[i]/top1_value[i]/top2_value[i]: position i of the prompt (values are fp32 copies of the bf16 "
                 "logits); greedy_top1_value/greedy_top2_value: the logits that chose each greedy token.",
        "prompts": [],
    }

    with torch.no_grad():
        for pi, (name, text) in enumerate(prompts()):
            ids = tok.encode(text, add_special_tokens=False).ids
            x = torch.tensor([ids], device=args.device)

            hooks, layer_stats = [], []
            if pi == 0:  # per-layer residual-stream statistics for triage
                def hook(_m, _inp, output):
                    h = (output[0] if isinstance(output, tuple) else output)[0].double()
                    layer_stats.append({"sum": float(h.sum()), "sumsq": float((h * h).sum()),
                                        "absmax": float(h.abs().max()),
                                        "last_token_first8": [float(v) for v in h[-1, :8]]})
                hooks = [layer.register_forward_hook(hook) for layer in model.model.layers]
            res = model(x, use_cache=True)
            for h in hooks:
                h.remove()
            logits = res.logits[0]  # [T, V] bf16
            top1, v1, v2 = [], [], []
            for t in range(logits.shape[0]):
                a, b, c = top2(logits[t])
                top1.append(a); v1.append(b); v2.append(c)
            last = logits[-1].float()
            vals, tids = torch.topk(last, TOP_LAST)  # descending; ties in an unspecified order
            entry = {
                "name": name, "ids": ids, "top1": top1, "top1_value": v1, "top2_value": v2,
                "last": {"top_ids": [int(i) for i in tids], "top_values": [float(v) for v in vals],
                         **vector_stats(last)},
            }

            # Greedy continuation with the KV cache (manual loop: never stops on an EOS id).
            past = res.past_key_values
            nxt = top1[-1]
            greedy, g1, g2 = [], [], []
            g1.append(v1[-1]); g2.append(v2[-1])
            for step in range(N_GREEDY):
                greedy.append(nxt)
                if step == N_GREEDY - 1:
                    break
                r = model(torch.tensor([[nxt]], device=args.device), past_key_values=past, use_cache=True)
                past = r.past_key_values
                a, b, c = top2(r.logits[0, -1])
                nxt = a
                g1.append(b); g2.append(c)
            entry["greedy"] = greedy
            entry["greedy_top1_value"] = g1
            entry["greedy_top2_value"] = g2
            if pi == 0:
                entry["layer_stats"] = layer_stats
            out["prompts"].append(entry)
            print(f"{name}: {len(ids)} tokens, last top1 {top1[-1]}, greedy {greedy[:8]}...", file=sys.stderr)

    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print(f"wrote {args.out} ({os.path.getsize(args.out)} bytes)", file=sys.stderr)


if __name__ == "__main__":
    main()
