#!/usr/bin/env bash
# Structured outputs and the Responses API on the GPU, on a `mkmodel` checkpoint (session 33):
#  - A/B of async scheduling for constrained steps: the server with deferred masks (default: the forward pass of step
#    N + 1 runs while the host computes its masks) against MXS_CONSTRAINED_SYNC=1 (session 32's synchronous steps),
#    `bench serve` at 64 streams, temperature 1, response_format text / json_object, twice each, interleaved;
#  - json_schema with the keywords zod and pydantic write ($defs + $ref recursion, nullable anyOf, integer bounds,
#    maxLength, maxItems): sampled completions checked in Python;
#  - tool calls: tool_choice required (name and arguments held to the tools), and a greedy chat's decode rate with tools;
#  - POST /v1/responses: a response with a forced function call, and its event stream.
# Usage: scripts/device-structured.sh BIN MODEL_DIR   (OUT: logs; default /tmp/mxs-out; MXS_BACKEND=cpu: a dry run)
set -uo pipefail
BIN=$1 MODEL=$2
OUT=${OUT:-/tmp/mxs-out}; mkdir -p "$OUT"
PORT=${MXS_SERVE_PORT:-8124}
URL=http://127.0.0.1:$PORT

start_server() {  # $1: log name; the environment decides the mode
  $BIN serve --model "$MODEL" --backend "${MXS_BACKEND:-cuda}" --port "$PORT" --max-length 8192 >"$OUT/$1.log" 2>&1 &
  spid=$!
  for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' $URL/health || true)" = 200 ] && return 0; sleep 0.1
  done
  echo "server $1 did not become ready"; return 1
}
stop_server() { kill -TERM $spid; wait $spid; }
load() {  # $1: mode label, $2: response format, $3: round
  timeout 240 $BIN bench serve --url $URL --endpoint completions --concurrency 64 --num-prompts 64 \
    --input-len 1024 --output-len 256 --temperature 1 --response-format "$2" \
    --json "$OUT/structured_$1_$2_$3.json" >"$OUT/structured_$1_$2_$3.md" 2>"$OUT/structured_$1_$2_$3.err"
  echo "== $1, response_format $2, round $3: $(grep -E 'Output throughput|TPOT median|Failed' \
    "$OUT/structured_$1_$2_$3.md" | tr -s ' ' | tr '\n' ';')"
}

for round in 1 2; do
  for mode in deferred sync; do
    if [ $mode = sync ]; then export MXS_CONSTRAINED_SYNC=1; else unset MXS_CONSTRAINED_SYNC; fi
    start_server "serve_$mode$round" || exit 1
    load $mode json_object $round
    load $mode text $round
    if [ $round = 1 ]; then
      # One constrained request alone (HTTP, request to answer): the decode rate with and without the constraint.
      for rf in text json_object; do
        t0=$(date +%s.%N)
        curl -s $URL/v1/completions -d "{\"prompt\":\"x\",\"max_tokens\":256,\"temperature\":1,\"seed\":9,
          \"response_format\":{\"type\":\"$rf\"}}" >"$OUT/rate_${mode}_$rf.json"
        python3 - "$OUT/rate_${mode}_$rf.json" "$t0" "$(date +%s.%N)" "$mode" "$rf" <<'PY'
import json, sys
r = json.load(open(sys.argv[1])); n = r["usage"]["completion_tokens"]
print(f"== one request, {sys.argv[4]}, {sys.argv[5]}: {n} tokens, {n / (float(sys.argv[3]) - float(sys.argv[2])):.0f} tok/s")
PY
      done
    fi
    if [ $mode = deferred ] && [ $round = 1 ]; then
      # json_schema as zod writes it: $defs + recursive $ref, nullable unions, integer bounds, maxLength, maxItems.
      schema='{"type":"object","additionalProperties":false,"required":["ok","level","code","items","tree"],
        "definitions":{"node":{"type":"object","additionalProperties":false,"required":["v","kids"],
          "properties":{"v":{"type":"integer","minimum":0,"maximum":9},
                        "kids":{"type":"array","items":{"$ref":"#/definitions/node"},"maxItems":1}}}},
        "properties":{"ok":{"type":"boolean"},"level":{"anyOf":[{"enum":["low","high"]},{"type":"null"}]},
          "code":{"type":"string","maxLength":3},
          "items":{"type":"array","maxItems":2,"items":{"type":"integer","minimum":-2,"maximum":2}},
          "tree":{"anyOf":[{"$ref":"#/definitions/node"},{"type":"null"}]}}}'
      for seed in 1 2 3; do
        curl -s $URL/v1/completions -d "{\"prompt\":\"A JSON object:\",\"max_tokens\":600,\"temperature\":1,
          \"seed\":$seed,\"response_format\":{\"type\":\"json_schema\",\"json_schema\":{\"name\":\"a\",
          \"schema\":$schema}}}" >"$OUT/zod_$seed.json"
      done
      python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
def node_ok(v, depth=0):
    return isinstance(v, dict) and set(v) == {"v", "kids"} and isinstance(v["v"], int) and 0 <= v["v"] <= 9 \
        and isinstance(v["kids"], list) and len(v["kids"]) <= 1 and all(node_ok(k, depth + 1) for k in v["kids"])
for seed in (1, 2, 3):
    r = json.load(open(f"{out}/zod_{seed}.json"))
    c = r["choices"][0]; text, fin = c["text"], c["finish_reason"]
    ok = None
    if fin == "stop":
        v = json.loads(text)
        ok = set(v) == {"ok", "level", "code", "items", "tree"} and isinstance(v["ok"], bool) and \
            v["level"] in ("low", "high", None) and isinstance(v["code"], str) and len(v["code"]) <= 3 and \
            isinstance(v["items"], list) and len(v["items"]) <= 2 and all(isinstance(i, int) and -2 <= i <= 2 for i in v["items"]) and \
            (v["tree"] is None or node_ok(v["tree"]))
    print(f"== json_schema ($ref, anyOf, bounds) seed {seed}: finish {fin}, {r['usage']['completion_tokens']} tokens, "
          f"{'valid' if ok else 'INVALID' if ok is False else 'cut'}: {json.dumps(json.loads(text) if ok else text)[:90]}")
PY
      # Tool calls (this session): tool_choice required at temperature 1 (the name held to a tool, the arguments to
      # its schema), and the decode rate of a greedy chat with tools (auto: masks only in headers and calls) against
      # the same chat without them.
      tools='[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object","required":["city"],
        "properties":{"city":{"type":"string","maxLength":24},"days":{"type":"integer","minimum":1,"maximum":7}}}}},
        {"type":"function","function":{"name":"get_time","parameters":{"type":"object","properties":{}}}}]'
      for seed in 1 2 3; do
        curl -s $URL/v1/chat/completions -d "{\"messages\":[{\"role\":\"user\",\"content\":\"Weather?\"}],
          \"tools\":$tools,\"tool_choice\":\"required\",\"temperature\":1,\"seed\":$seed,\"max_tokens\":200}" \
          >"$OUT/tool_required_$seed.json"
      done
      for with in no yes; do
        body="{\"messages\":[{\"role\":\"user\",\"content\":\"Hello\"}],\"temperature\":0,\"max_tokens\":256"
        [ $with = yes ] && body="$body,\"tools\":$tools"
        t0=$(date +%s.%N)
        curl -s $URL/v1/chat/completions -d "$body}" >"$OUT/tool_rate_$with.json"
        echo "$t0 $(date +%s.%N)" >"$OUT/tool_rate_$with.t"
      done
      python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
for seed in (1, 2, 3):
    c = json.load(open(f"{out}/tool_required_{seed}.json"))["choices"][0]
    calls = c["message"].get("tool_calls") or []
    ok = None
    if c["finish_reason"] == "tool_calls" and calls:
        f = calls[0]["function"]; a = json.loads(f["arguments"])
        ok = (f["name"] == "get_weather" and set(a) <= {"city", "days"} and isinstance(a.get("city"), str) and
              len(a["city"]) <= 24 and (1 <= a["days"] <= 7 if "days" in a else True)) or (f["name"] == "get_time" and a == {})
    print(f"== tool_choice required seed {seed}: finish {c['finish_reason']}, "
          f"{'valid' if ok else 'INVALID' if ok is False else 'cut'}: {json.dumps(calls[0]['function'] if calls else None)[:100]}")
for w in ("no", "yes"):
    r = json.load(open(f"{out}/tool_rate_{w}.json")); t0, t1 = map(float, open(f"{out}/tool_rate_{w}.t").read().split())
    n = r["usage"]["completion_tokens"]
    print(f"== greedy chat, tools {w}: {n} tokens, {n / (t1 - t0):.0f} tok/s (HTTP, request to answer)")
PY
      # The Responses API: a forced function call, then the same as a stream.
      req='{"input":"Weather in Paris?","instructions":"Be brief.","max_output_tokens":24,"seed":4,
        "tools":[{"type":"function","name":"get_weather","parameters":{"type":"object","properties":{"city":{"type":"string"}}}}],
        "tool_choice":{"type":"function","name":"get_weather"}'
      curl -s $URL/v1/responses -d "$req}" >"$OUT/responses.json"
      curl -sN $URL/v1/responses -d "$req,\"stream\":true}" >"$OUT/responses_stream.txt"
      python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
r = json.load(open(f"{out}/responses.json"))
print(f"== responses: {r.get('status')}, output {[o['type'] for o in r.get('output', [])]}, "
      f"usage {r.get('usage', {}).get('output_tokens')} / {r.get('usage', {}).get('input_tokens')}, {r.get('error')}")
events = [l[7:] for l in open(f"{out}/responses_stream.txt").read().splitlines() if l.startswith("event: ")]
print(f"== responses stream: {len(events)} events, first {events[:3]}, last {events[-1:]}")
PY
    fi
    stop_server
  done
done
unset MXS_CONSTRAINED_SYNC
python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
print("| mode | response_format | output tok/s (rounds) | TPOT median ms (rounds) |\n|---|---|---|---|")
for mode in ("deferred", "sync"):
    for rf in ("text", "json_object"):
        tps, tpot = [], []
        for rnd in (1, 2):
            f = f"{out}/structured_{mode}_{rf}_{rnd}.json"
            if not os.path.exists(f): continue
            lv = json.load(open(f))["levels"][0]
            tps.append(f"{lv['output_throughput']:,.0f}"); tpot.append(f"{lv['tpot']['median_ms']:.2f}")
        print(f"| {mode} | {rf} | {' / '.join(tps)} | {' / '.join(tpot)} |")
PY
