#!/usr/bin/env bash
# Builds mxserve and runs every test (the README's test command; .ci/run calls it).
# GPU tests (ctest label gpu) report "skipped" on a machine without a CUDA device.
# JOBS (default 2) sets build parallelism; BUILD_DIR (default build) the build folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
tok=$(bash scripts/fetch-tokenizer.sh)
export MXSERVE_TOKENIZER="$tok"
BUILD_DIR="${BUILD_DIR:-build}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo ${CMAKE_ARGS:-}
cmake --build "$BUILD_DIR" -j "${JOBS:-2}"
if [ -f tests/e2e/package.json ]; then (cd tests/e2e && npm ci --silent --no-audit --no-fund); fi
cd "$BUILD_DIR" && ctest --output-on-failure -j "${JOBS:-2}"
