#!/usr/bin/env bash
# The README's run command: installs what is missing, builds (Release), and starts the OpenAI-compatible
# server. Without MODEL it serves the embedded demo checkpoint (a tiny random gpt-oss written by
# `mxserve mkmodel` into the cache); set MODEL=/path/to/gpt-oss-20b for a real one. Extra arguments go to
# `mxserve serve` (e.g. --port 8080 --backend cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export MXSERVE_TOKENIZER="${MXSERVE_TOKENIZER:-$(bash scripts/fetch-tokenizer.sh)}"
BUILD_DIR="${BUILD_DIR:-build-release}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF ${CMAKE_ARGS:-} >/dev/null
cmake --build "$BUILD_DIR" -j "${JOBS:-$(nproc)}"
backend=cpu
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1 && grep -q "MXS_BUILT_WITH_CUDA:INTERNAL=ON" "$BUILD_DIR/CMakeCache.txt" 2>/dev/null; then
  backend=cuda
fi
args=(serve --backend "${BACKEND:-$backend}")
[ -n "${MODEL:-}" ] && args+=(--model "$MODEL")
exec "$BUILD_DIR/mxserve" "${args[@]}" "$@"
