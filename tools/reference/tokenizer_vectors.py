#!/usr/bin/env python3
"""Writes tests/data/tokenizer_vectors.jsonl: HF `tokenizers` ids for every string of tokenizer_strings.json.

Run where `tokenizers` is installed (no network needed):
    python3 tools/reference/tokenizer_vectors.py /path/to/tokenizer.json [-o tests/data/tokenizer_vectors.jsonl]

Output: line 1 is a header record {"oracle": ..., "tokenizer_sha256": ..., "count": N}; then one record per
string {"category", "text", "ids"} where "ids" treats special-token strings as plain text (mxserve
Tokenizer::encode), plus "ids_with_specials" (HF's default: added tokens recognized, mxserve
encode_with_specials) when that differs. Both use add_special_tokens=False (gpt-oss adds no BOS anyway).
tools/reference/tokenizer_vectors_npm.mjs writes the same format from npm oracles when HF is not at hand.
"""
import argparse
import hashlib
import json
import os

import tokenizers
from tokenizers import Tokenizer

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("tokenizer_json")
    ap.add_argument("--strings", default=os.path.join(HERE, "tokenizer_strings.json"))
    ap.add_argument("-o", "--out", default=os.path.join(HERE, "..", "..", "tests", "data", "tokenizer_vectors.jsonl"))
    args = ap.parse_args()

    with open(args.tokenizer_json, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    with_specials = Tokenizer.from_file(args.tokenizer_json)
    plain = Tokenizer.from_file(args.tokenizer_json)
    plain.encode_special_tokens = True  # added-token strings are ordinary text (tokenizers >= 0.19)
    strings = json.load(open(args.strings, encoding="utf-8"))["strings"]

    records = []
    for s in strings:
        text = s["text"]
        ids = plain.encode(text, add_special_tokens=False).ids
        rec = {"category": s["category"], "text": text, "ids": ids}
        ids_sp = with_specials.encode(text, add_special_tokens=False).ids
        if ids_sp != ids:
            rec["ids_with_specials"] = ids_sp
        records.append(rec)

    header = {"oracle": f"hf-tokenizers {tokenizers.__version__}", "tokenizer_sha256": sha, "count": len(records)}
    with open(args.out, "w", encoding="utf-8") as f:
        for rec in [header] + records:
            f.write(json.dumps(rec, ensure_ascii=True, separators=(",", ":")) + "\n")
    print(f"wrote {len(records)} vectors to {args.out} ({header['oracle']})")


if __name__ == "__main__":
    main()
