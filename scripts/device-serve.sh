#!/usr/bin/env bash
# The engine and the server on the GPU, on a `mkmodel` checkpoint: offline throughput (`bench throughput`, 1k in /
# 256 out at concurrency 1 and 64, 1k / 1k at 64 and 256), the server's time to ready, a chat probe, HTTP load
# (`bench serve`, concurrency 64 and 1) with bad requests and dropped streams sent while the load runs, and the
# server still healthy and serving afterwards. Called by device-check.sh and device-bins-check.sh (MXS_CHECK_SERVE=1).
# Usage: scripts/device-serve.sh BIN MODEL_DIR   (OUT: the folder for logs and JSON; default /tmp/mxs-out;
#        MXS_SERVE_1K1K=0 skips the 1k / 1k throughput)
set -uo pipefail
BIN=$1 MODEL=$2
OUT=${OUT:-/tmp/mxs-out}; mkdir -p "$OUT"
PORT=${MXS_SERVE_PORT:-8123}
URL=http://127.0.0.1:$PORT

timeout 200 $BIN bench throughput --backend cuda --model "$MODEL" --input-len 1024 --output-len 256 \
  --num-prompts 64 --concurrency 1,64 --json "$OUT/bench_throughput.json" >"$OUT/bench_throughput.md" \
  2>"$OUT/bench_throughput.err"
echo "== bench throughput 1k/256 rc=$?"; grep -E "^\|" "$OUT/bench_throughput.md"
if [ "${MXS_SERVE_1K1K:-1}" = 1 ]; then  # (MXS_SERVE_1K1K=0 skips it: 256 x 2k tokens)
  timeout 240 $BIN bench throughput --backend cuda --model "$MODEL" --input-len 1024 --output-len 1024 \
    --num-prompts 256 --concurrency 64,256 --json "$OUT/bench_throughput_1k1k.json" \
    >"$OUT/bench_throughput_1k1k.md" 2>"$OUT/bench_throughput_1k1k.err"
  echo "== bench throughput 1k/1k rc=$?"; grep -E "^\|" "$OUT/bench_throughput_1k1k.md"
fi

t0=$(date +%s.%N)
$BIN serve --model "$MODEL" --backend cuda --port "$PORT" --max-length 8192 >"$OUT/serve.log" 2>&1 &
spid=$!
code=000 loading=0
for _ in $(seq 1 600); do
  code=$(curl -s -o /dev/null -w '%{http_code}' $URL/health || true)
  [ "$code" = 503 ] && loading=$((loading + 1))  # /health answers 503 while the model loads
  [ "$code" = 200 ] && break; sleep 0.1
done
t1=$(date +%s.%N)
python3 -c "print(round($t1 - $t0, 2))" >"$OUT/ready_s.txt"
echo "== serve time to ready: $(cat "$OUT/ready_s.txt") s (health $code; $loading polls answered 503 while loading)"
curl -s $URL/v1/chat/completions -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"What is 2 + 2?"}],"max_tokens":48}' \
  >"$OUT/curl_probe.json"
echo "== chat probe: $(head -c 600 "$OUT/curl_probe.json")"
# n choices: one response with 4, and a stream whose chunks carry every index.
curl -s $URL/v1/chat/completions -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Name a color."}],"max_tokens":32,"temperature":1,"seed":3,"n":4}' \
  >"$OUT/curl_n4.json"
python3 - "$OUT/curl_n4.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print("== n = 4:", [c["index"] for c in r.get("choices", [])], "usage", r.get("usage", {}).get("completion_tokens"),
      "distinct answers", len({json.dumps(c["message"]) for c in r.get("choices", [])}), r.get("error", ""))
PY
curl -sN $URL/v1/chat/completions -H 'Content-Type: application/json' \
  -d '{"messages":[{"role":"user","content":"Name a color."}],"max_tokens":32,"temperature":1,"n":4,"stream":true}' \
  >"$OUT/curl_n4_stream.txt"
echo "== n = 4 stream: indexes $(grep -o '"index":[0-9]' "$OUT/curl_n4_stream.txt" | sort | uniq -c | tr '\n' ' ')" \
  "finishes $(grep -c '"finish_reason":"' "$OUT/curl_n4_stream.txt") done $(grep -c '\[DONE\]' "$OUT/curl_n4_stream.txt")"

# n choices share one prefill (session 31, exp209): an ~850-token prompt at n = 1 and n = 4, prefix-cache hits and
# tokens computed per request (n = 4 should compute the prompt once: hits ~3 x the prompt's full blocks).
metric() { curl -s $URL/metrics | awk -v n="$1" '$1 == n {print $2}'; }
long=$(python3 -c "print('seventeen apples and a pear ' * 170)")
for n in 1 4; do
  h0=$(metric mxserve_prefix_cache_hits_tokens_total); c0=$(metric mxserve_engine_computed_tokens_total)
  t0=$(date +%s.%N)
  curl -s $URL/v1/completions -H 'Content-Type: application/json' \
    -d "{\"prompt\":\"$n $long\",\"max_tokens\":64,\"temperature\":1,\"n\":$n}" >"$OUT/shared_n$n.json"
  t1=$(date +%s.%N)
  python3 - "$OUT/shared_n$n.json" "$n" "$h0" "$(metric mxserve_prefix_cache_hits_tokens_total)" "$c0" \
    "$(metric mxserve_engine_computed_tokens_total)" "$t0" "$t1" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); n = int(sys.argv[2])
h = float(sys.argv[4]) - float(sys.argv[3]); c = float(sys.argv[6]) - float(sys.argv[5])
print(f"== shared prefill, n={n}: choices {[x['index'] for x in r['choices']]} prompt {r['usage']['prompt_tokens']} "
      f"completion {r['usage']['completion_tokens']} | cache hits {h:.0f} | computed {c:.0f} | "
      f"{1e3 * (float(sys.argv[8]) - float(sys.argv[7])):.0f} ms")
PY
done

# response_format json_object (session 32) on the GPU: sampled completions of the random model under the constraint
# (a JSON object when they end by themselves, else a prefix of one), one chat request, and the decode rate of a
# constrained completion against an unconstrained one (the mask is computed on the host between steps).
close=$(curl -s $URL/tokenize -d '{"prompt":"}"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["tokens"][0])')
for seed in 1 2 3 4; do
  curl -s $URL/v1/completions -d "{\"prompt\":\"A JSON object:\",\"max_tokens\":96,\"temperature\":1,\"seed\":$seed,
    \"response_format\":{\"type\":\"json_object\"},\"logit_bias\":{\"$close\":4}}" >"$OUT/json_$seed.json"
done
curl -s $URL/v1/chat/completions -d '{"messages":[{"role":"user","content":"JSON please"}],"max_tokens":64,
  "response_format":{"type":"json_object"}}' >"$OUT/json_chat.json"
for seed in 1 2 3; do  # json_schema: an enum, a boolean, an integer and an array of strings
  curl -s $URL/v1/completions -d "{\"prompt\":\"A JSON object:\",\"max_tokens\":160,\"temperature\":1,\"seed\":$seed,
    \"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"s\",\"schema\":{\"type\":\"object\",
    \"required\":[\"color\",\"ok\",\"n\"],\"properties\":{\"color\":{\"enum\":[\"red\",\"green\"]},
    \"ok\":{\"type\":\"boolean\"},\"n\":{\"type\":\"integer\"},\"tags\":{\"type\":\"array\",
    \"items\":{\"type\":\"string\"}}}}}}}" >"$OUT/json_schema_$seed.json"
done
for mode in text json_object; do
  t0=$(date +%s.%N)
  curl -s $URL/v1/completions -d "{\"prompt\":\"x\",\"max_tokens\":256,\"temperature\":1,\"seed\":9,
    \"response_format\":{\"type\":\"$mode\"}}" >"$OUT/json_rate_$mode.json"
  echo "$t0 $(date +%s.%N)" >"$OUT/json_rate_$mode.t"
done
python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for seed in (1, 2, 3, 4):
    r = json.load(open(f"{out}/json_{seed}.json"))["choices"][0]
    text, fin = r["text"], r["finish_reason"]
    ok = isinstance(json.loads(text), dict) if fin == "stop" else text.startswith("{")
    print(f"== json_object seed {seed}: finish {fin}, {len(text)} chars, {'valid' if ok else 'INVALID'}: {text[:60]!r}")
for seed in (1, 2, 3):
    r = json.load(open(f"{out}/json_schema_{seed}.json"))["choices"][0]
    text, fin = r["text"], r["finish_reason"]
    if fin == "stop":
        v = json.loads(text)
        ok = set(v) <= {"color", "ok", "n", "tags"} and v["color"] in ("red", "green") and \
            isinstance(v["ok"], bool) and isinstance(v["n"], int) and all(isinstance(t, str) for t in v.get("tags", []))
    else:
        ok = text.startswith("{")
    print(f"== json_schema seed {seed}: finish {fin}, {len(text)} chars, {'valid' if ok else 'INVALID'}: {text[:70]!r}")
c = json.load(open(f"{out}/json_chat.json"))
print(f"== json_object chat: finish {c['choices'][0]['finish_reason']}, content {c['choices'][0]['message']['content'][:60]!r}")
for mode in ("text", "json_object"):
    r = json.load(open(f"{out}/json_rate_{mode}.json"))
    t0, t1 = map(float, open(f"{out}/json_rate_{mode}.t").read().split())
    n = r["usage"]["completion_tokens"]
    print(f"== completion of {n} tokens, response_format {mode}: {n / (t1 - t0):.0f} tok/s (HTTP, request to answer)")
PY

# The server's overhead: the same workload as `bench throughput` concurrency 64, through HTTP + SSE.
timeout 240 $BIN bench serve --url $URL --endpoint completions --concurrency 64 --num-prompts 64 \
  --input-len 1024 --output-len 256 --ignore-eos --json "$OUT/bench_serve.json" >"$OUT/bench_serve.md" 2>"$OUT/bench_serve.err"
echo "== bench serve (HTTP, concurrency 64) rc=$?"
grep -E "Failed|Total output tokens|Output throughput|TTFT (mean|median)|TPOT median|ITL p99" "$OUT/bench_serve.md"
# Structured outputs under load (session 32): 64 streams at temperature 1, every answer a JSON object, against the
# same load unconstrained (no ignore_eos for either: json_object refuses it; an object the random model closes ends its
# request early, so compare tok/s, not durations).
for rf in text json_object; do
  timeout 240 $BIN bench serve --url $URL --endpoint completions --concurrency 64 --num-prompts 64 \
    --input-len 1024 --output-len 256 --temperature 1 --response-format $rf --json "$OUT/bench_serve_$rf.json" \
    >"$OUT/bench_serve_$rf.md" 2>"$OUT/bench_serve_$rf.err"
  echo "== bench serve (HTTP, concurrency 64, temperature 1, response_format $rf) rc=$?"
  grep -E "Failed|Total output tokens|Output throughput|TPOT median" "$OUT/bench_serve_$rf.md"
done
# Abuse sent while `bench serve` loads the server: each must get its own error (status, OpenAI error type) and
# cost the load nothing (bench serve lists failed requests). A stream the client drops must free its sequence.
abuse() {
  sleep 0.5
  post() { curl -s -o "$OUT/abuse_$1.json" -w "%{http_code}" $URL/v1/chat/completions \
             -H 'Content-Type: application/json' --data-binary "$2"; }
  {
    echo "bad JSON: $(post json '{"messages": [')"
    echo "no messages: $(post nomsg '{"model":"m"}')"
    echo "max_tokens -1: $(post maxtok '{"messages":[{"role":"user","content":"x"}],"max_tokens":-1}')"
    echo "temperature 9: $(post temp '{"messages":[{"role":"user","content":"x"}],"temperature":9}')"
    echo "logit_bias out of the vocabulary: $(post bias '{"messages":[{"role":"user","content":"x"}],"logit_bias":{"900000":5}}')"
    long=$(python3 -c "print('word ' * 12000)")
    echo "prompt over --max-length: $(post long "{\"messages\":[{\"role\":\"user\",\"content\":\"$long\"}]}")"
    echo "unknown path: $(curl -s -o /dev/null -w '%{http_code}' $URL/v1/nothing)"
    for i in 1 2 3 4; do  # streams dropped by the client after 0.3 s
      timeout 0.3 curl -sN $URL/v1/chat/completions -H 'Content-Type: application/json' \
        -d '{"messages":[{"role":"user","content":"Tell a long story."}],"max_tokens":4000,"stream":true}' \
        >/dev/null 2>&1
      echo "dropped stream $i: rc=$?"
    done
  } >"$OUT/abuse.txt" 2>&1
}
abuse &
apid=$!
timeout 240 $BIN bench serve --url $URL --endpoint completions --concurrency 64 --num-prompts 64 \
  --input-len 1024 --output-len 256 --ignore-eos --json "$OUT/bench_serve_abuse.json" >"$OUT/bench_serve_abuse.md" \
  2>"$OUT/bench_serve_abuse.err"
echo "== bench serve (HTTP, concurrency 64, abuse alongside) rc=$?"
grep -E "Failed|Output throughput|TTFT median" "$OUT/bench_serve_abuse.md"
wait $apid
echo "== abuse during the load (HTTP status each):"; cat "$OUT/abuse.txt"
for f in json nomsg maxtok temp bias long; do echo "   $f: $(head -c 240 "$OUT/abuse_$f.json" 2>/dev/null)"; done
timeout 120 $BIN bench serve --url $URL --endpoint completions --concurrency 1 --num-prompts 8 --input-len 1024 \
  --output-len 256 --ignore-eos --json "$OUT/bench_serve_c1.json" >"$OUT/bench_serve_c1.md" 2>"$OUT/bench_serve_c1.err"
echo "== bench serve (HTTP, concurrency 1) rc=$?"
grep -E "Output throughput|TTFT median|TPOT median|Failed" "$OUT/bench_serve_c1.md"
echo "== after the load: health $(curl -s -o /dev/null -w '%{http_code}' $URL/health);" \
  "$(curl -s $URL/metrics | grep -E '^mxserve_(requests_active|requests_waiting|engine_requests_[a-z]*|requests_cancelled_total|requests_failed_total|http_responses_4xx_total|http_responses_5xx_total|kv_[a-z_]*) ' | tr '\n' ' ')"
kill -TERM $spid; wait $spid; echo "== serve exit rc=$? (0 = drained and stopped on SIGTERM)"
