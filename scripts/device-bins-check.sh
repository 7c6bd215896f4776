#!/usr/bin/env bash
# On the GPU machine, with binaries built here (no build there): every GPU test binary, compute-sanitizer memcheck of
# the LM-head screen and runner tests, batch-1 decode three times with and without each A/B switch, the decode table,
# gpt-oss-120b, short contexts with and without --exact-attention, sampled steps (temperature 1, top-p 0.9) on each
# sampling path with racecheck of the spread kernels, and (MXS_CHECK_CKPT=1) a `mkmodel` 20b checkpoint:
# its CPU-reference test, `bench decode --model`, `generate` with and without the LM-head screen (the same text
# expected) and at temperature 1 (and with top-p / top-k cuts) with and without the spread path (the same text
# expected), with penalties and with logit bias + min_tokens (async on and off: the same text); with
# MXS_CHECK_SERVE=1 too, scripts/device-serve.sh on that checkpoint. Prints what to paste into PERF.md.
# Here: bash scripts/pack-bins.sh. There (carry wt-pack): MXS_CHECK_CKPT=1 bash scripts/device-bins-check.sh
# Env: MXS_BENCH=0 (no benchmarks), MXS_CHECK_CKPT=1, MXS_CHECK_SERVE=1 (see above), MXS_AB (space-separated
# switches, VAR=VALUE[+VAR=VALUE]; default: the LM-head screen off, the norm's own launch at 2-4 tokens, q/k/v from
# bf16 at one token: the session 24-26 changes not yet measured on an H100), MXS_BATCHES.
AB_DEFAULT="MXS_LM_SCREEN=0 MXS_NO_ROUTER_NORM_FOLD=1 MXS_BF12=lm_head,o_proj"
set -uo pipefail
cd "$(dirname "$0")/.."
source scripts/device-bins-env.sh
nvidia-smi --query-gpu=name --format=csv,noheader
CS=$(command -v compute-sanitizer || echo /usr/local/cuda/bin/compute-sanitizer)
for t in wt-bin/cuda_*_test; do
  n=$(basename "$t"); timeout 400 "$t" >"$OUT/$n.log" 2>&1; rc=$?
  echo "$n rc=$rc $(grep -E '^\[  PASSED|^\[  FAILED' "$OUT/$n.log" | tr '\n' ' ' | cut -c1-120)"
  grep -E "^\[  FAILED|Failure|Which is" "$OUT/$n.log" | head -6
done
if [ -x wt-bin/cuda_lm_head_screen_test ]; then
  timeout 200 "$CS" --tool memcheck --error-exitcode 9 wt-bin/cuda_lm_head_screen_test \
    --gtest_filter='*SameArgmax*:*Zero*:*Packer*:*Ties*' >"$OUT/memcheck_screen.log" 2>&1
  echo "memcheck screen test rc=$? $(grep 'ERROR SUMMARY' "$OUT/memcheck_screen.log" | tail -1)"
fi
if [ -x wt-bin/cuda_runner_test ]; then
  timeout 300 "$CS" --tool memcheck --error-exitcode 9 wt-bin/cuda_runner_test \
    --gtest_filter='*GreedyScreen*:*GraphReplayTiming*:*BadSequence*' >"$OUT/memcheck_runner.log" 2>&1
  echo "memcheck runner rc=$? $(grep 'ERROR SUMMARY' "$OUT/memcheck_runner.log" | tail -1)"
fi
# Benchmarks (MXS_BENCH=0 skips them: tests, sanitizers and the checkpoint checks only).
if [ "${MXS_BENCH:-1}" = 1 ]; then
one() { local e=$1; env ${e//+/ } $B bench decode --preset ${3:-20b} --batch ${2:-1} --context 1024 --steps 64 \
  --breakdown none 2>/dev/null | grep -E "^\| [0-9]" | sed "s/^/$e ${3:-20b} /"; }
for r in 1 2 3; do one X=1; for ab in ${MXS_AB:-$AB_DEFAULT}; do one "$ab"; done; done
$B bench decode --preset 20b --batch "${MXS_BATCHES:-1,2,3,4,5,6,7,8,16,32,64,128,256}" --context 1024 \
  --json "$OUT/bench_20b.json" >"$OUT/bench_20b.md" 2>"$OUT/bench_20b.err"
for ab in ${MXS_AB:-$AB_DEFAULT}; do one "$ab" 1,2,3,4,5,6,7,8; done
one X=1 1,8,64 120b; for ab in ${MXS_AB:-$AB_DEFAULT}; do one "$ab" 1,8 120b; done
# Short contexts (session 27): the tensor-core attention (default) vs the exact path, batch 1 / 8 / 64 at 200 keys.
short() { env ${1//+/ } $B bench decode --preset 20b --batch 1,8,64 --context 200 --steps 32 --breakdown none \
  2>/dev/null | grep -E "^\| [0-9]" | sed "s/^/$1 ctx200 /"; }
for r in 1 2; do short X=1; short MXS_EXACT_ATTENTION=1; done
# Sampled steps (sessions 28-30): temperature 1 (the OpenAI default), top-p 0.9 and a presence penalty, and greedy
# steps with logprobs or a presence penalty (session 30), on the spread path vs one CTA per row
# (MXS_NO_SPREAD_SAMPLING=1).
sampled() { env ${1//+/ } $B bench decode --preset 20b --batch 1,8,32,64 --context 1024 --steps 32 --breakdown none \
  $2 2>/dev/null | grep -E "^\| [0-9]" | sed "s/^/$1 $2 /"; }
for r in 1 2; do
  for e in X=1 MXS_NO_SPREAD_SAMPLING=1; do
    sampled $e "--temperature 1"; sampled $e "--temperature 1 --top-p 0.9"
    sampled $e "--temperature 1 --presence-penalty 0.5"; sampled $e "--logprobs"; sampled $e "--presence-penalty 0.5"
  done
done
fi  # MXS_BENCH
if [ -x wt-bin/cuda_sampling_test ]; then  # the spread kernels under racecheck, one row (the whole test is too slow there)
  for cfg in "plain, spread" "top_k 50 top_p 0.9, spread" "penalty, spread" "logprobs, spread" \
             "greedy penalty, spread" "greedy logprobs, spread"; do
    MXS_SAMPLING_TIMING_ROWS=1 MXS_SAMPLING_TIMING_ONLY="$cfg" timeout 150 "$CS" --tool racecheck \
      wt-bin/cuda_sampling_test --gtest_filter='*Timing*' >"$OUT/racecheck_sampling.log" 2>&1
    echo "racecheck sampling '$cfg' rc=$? $(grep 'RACECHECK SUMMARY' "$OUT/racecheck_sampling.log" | tail -1)"
  done
fi
if [ "${MXS_CHECK_CKPT:-0}" = 1 ] && [ -f wt-bin/tokenizer.json ]; then
  timeout 240 $B mkmodel --preset 20b --seed 1 --tokenizer wt-bin/tokenizer.json --out /tmp/m20b >"$OUT/mkmodel.log" 2>&1
  echo "mkmodel rc=$?"
  cat /tmp/m20b/*.safetensors >/dev/null
  MXSERVE_TEST_20B_DIR=/tmp/m20b timeout 240 wt-bin/cuda_runner_test --gtest_filter='CudaRunner20b.*' \
    >"$OUT/test_20b.log" 2>&1
  echo "20b vs CPU rc=$? $(grep -E '^\[  PASSED|^\[  FAILED' "$OUT/test_20b.log")"
  # gpt-oss-120b's width (128 experts) at 2 layers, where the check's bound is tight (scripts/device-120b.sh: all 36).
  timeout 200 $B mkmodel --preset 120b --layers 2 --seed 1 --tokenizer wt-bin/tokenizer.json --out /tmp/m120b_2l -q \
    >"$OUT/mkmodel_120b_2l.log" 2>&1
  MXSERVE_TEST_120B_DIR=/tmp/m120b_2l timeout 200 wt-bin/cuda_runner_test --gtest_filter='CudaRunner120b.*' \
    >"$OUT/test_120b_2l.log" 2>&1
  echo "120b width, 2 layers, vs CPU rc=$? $(grep -E '^checkpoint' "$OUT/test_120b_2l.log")"; rm -rf /tmp/m120b_2l
  timeout 200 $B bench decode --model /tmp/m20b --batch 1,64 --context 1024 --steps 32 >"$OUT/ckpt.md" 2>"$OUT/ckpt.err"
  echo "bench decode --model rc=$?"; grep -E "^\| [0-9]" "$OUT/ckpt.md"; grep -E "weights on the GPU" "$OUT/ckpt.err"
  for f in "" --no-lm-head-screen; do
    timeout 120 $B generate --model /tmp/m20b --backend cuda --max-tokens 64 --temperature 0 --raw -p "Hello" $f \
      >"$OUT/gen$f.txt" 2>"$OUT/gen$f.err"
    echo "generate $f rc=$? $(grep -E 'tok/s' "$OUT/gen$f.err" | tail -1)"
  done
  cmp "$OUT/gen.txt" "$OUT/gen--no-lm-head-screen.txt" && echo "generate: the same text with and without the screen"
  # Sampled decode (temperature 1, the default): the spread draw vs one CTA per row (session 27).
  for e in X=1 MXS_NO_SPREAD_SAMPLING=1; do
    env $e timeout 120 $B generate --model /tmp/m20b --backend cuda --max-tokens 256 --seed 7 --raw -p "Hello" \
      >"$OUT/gen_t1_$e.txt" 2>"$OUT/gen_t1_$e.err"
    echo "generate temperature 1 $e rc=$? $(grep -E 'tok/s' "$OUT/gen_t1_$e.err" | tail -1)"
  done
  cmp "$OUT/gen_t1_X=1.txt" "$OUT/gen_t1_MXS_NO_SPREAD_SAMPLING=1.txt" && echo "generate T=1: the same text either way"
  # With cuts (session 29: the radix selects): top-p 0.9 and top-k 50, spread vs one CTA per row.
  for e in X=1 MXS_NO_SPREAD_SAMPLING=1; do
    env $e timeout 120 $B generate --model /tmp/m20b --backend cuda --max-tokens 256 --seed 7 --top-p 0.9 --top-k 50 \
      --raw -p "Hello" >"$OUT/gen_cut_$e.txt" 2>"$OUT/gen_cut_$e.err"
    echo "generate top-p 0.9 top-k 50 $e rc=$? $(grep -E 'tok/s' "$OUT/gen_cut_$e.err" | tail -1)"
  done
  cmp "$OUT/gen_cut_X=1.txt" "$OUT/gen_cut_MXS_NO_SPREAD_SAMPLING=1.txt" && echo "generate with cuts: the same text either way"
  # Penalties under async scheduling (session 30: the kernels count the token still on the device): on == off.
  for m in on off; do
    timeout 120 $B generate --model /tmp/m20b --backend cuda --max-tokens 256 --seed 7 --temperature 0.8 \
      --presence-penalty 0.5 --frequency-penalty 0.3 --repetition-penalty 1.1 --async-scheduling $m --raw -p "Hello" \
      >"$OUT/gen_pen_$m.txt" 2>"$OUT/gen_pen_$m.err"
    echo "generate with penalties, async $m rc=$? $(grep -E 'tok/s' "$OUT/gen_pen_$m.err" | tail -1)"
  done
  cmp "$OUT/gen_pen_on.txt" "$OUT/gen_pen_off.txt" && echo "generate with penalties: the same text with async on and off"
  # logit_bias and min_tokens (session 32): <|return|> pushed up but held back for 20 tokens, a token banned; the
  # step count includes the token still on the device under async scheduling: on == off.
  for m in on off; do
    timeout 120 $B generate --model /tmp/m20b --backend cuda --max-tokens 64 --seed 7 --temperature 0.8 \
      --logit-bias 200002=6 --logit-bias 13=-100 --min-tokens 20 --async-scheduling $m --raw -p "Hello" \
      >"$OUT/gen_bias_$m.txt" 2>"$OUT/gen_bias_$m.err"
    echo "generate with logit bias + min_tokens, async $m rc=$? $(grep -E 'tok/s' "$OUT/gen_bias_$m.err" | tail -1)"
  done
  cmp "$OUT/gen_bias_on.txt" "$OUT/gen_bias_off.txt" && echo "generate with logit bias: the same text with async on and off"
  # --json-schema (session 33): a nullable union, a recursive $ref, integer bounds; the masks of the steps after the
  # token in flight deferred under async scheduling: on == off.
  echo '{"type":"object","required":["ok","n"],"$defs":{"t":{"type":"object","required":["v"],"properties":
    {"v":{"type":"integer","minimum":0,"maximum":9},"kids":{"type":"array","maxItems":1,"items":{"$ref":"#/$defs/t"}}}}},
    "properties":{"ok":{"type":"boolean"},"n":{"anyOf":[{"type":"integer","minimum":-5,"maximum":5},{"type":"null"}]},
    "t":{"$ref":"#/$defs/t"}}}' >/tmp/mxs_schema.json
  for m in on off; do
    timeout 120 $B generate --model /tmp/m20b --backend cuda --max-tokens 160 --seed 7 --temperature 1 \
      --json-schema /tmp/mxs_schema.json --async-scheduling $m --raw -p "JSON:" >"$OUT/gen_schema_$m.txt" \
      2>"$OUT/gen_schema_$m.err"
    echo "generate --json-schema, async $m rc=$? $(grep -E 'tok/s' "$OUT/gen_schema_$m.err" | tail -1): $(head -c 120 "$OUT/gen_schema_$m.txt")"
  done
  cmp "$OUT/gen_schema_on.txt" "$OUT/gen_schema_off.txt" && echo "generate --json-schema: the same text with async on and off"
fi
# The engine and the server on that checkpoint (MXS_CHECK_SERVE=1): throughput, time to ready, HTTP load with bad
# requests and dropped streams alongside (scripts/device-serve.sh).
if [ "${MXS_CHECK_SERVE:-0}" = 1 ] && [ -d /tmp/m20b ]; then OUT="$OUT" bash scripts/device-serve.sh "$B" /tmp/m20b; fi
[ -f "$OUT/bench_20b.md" ] && grep -E "^\| [0-9]|card" "$OUT/bench_20b.md"
