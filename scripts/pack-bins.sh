#!/usr/bin/env bash
# Here: builds the CUDA build folder and packs what the device scripts run (device-bins-env.sh unpacks it there):
# mxserve and every cuda_*_test stripped, the tokenizer, xz-compressed into wt-pack/bins.txz (~26-30 MB, under the
# device tool's 64 MiB carry limit), and the commit into wt-pack/COMMIT. wt-bin/ and wt-pack/ are git-ignored scratch.
# Usage: bash scripts/pack-bins.sh [BUILD_DIR]   (default build-cuda, configured with -DMXS_CUDA=ON)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build-cuda}
cmake --build "$BUILD" -j2
rm -rf wt-bin && mkdir -p wt-bin wt-pack
strip -o wt-bin/mxserve "$BUILD/mxserve"
for t in "$BUILD"/tests/cuda_*_test; do strip -o "wt-bin/$(basename "$t")" "$t"; done
tok=${MXSERVE_TOKENIZER:-$HOME/.cache/mxserve/tokenizer/tokenizer.json}
[ -f "$tok" ] && cp "$tok" wt-bin/tokenizer.json
tar -C wt-bin -cf - . | xz -T2 -3 > wt-pack/bins.txz
git rev-parse --short HEAD > wt-pack/COMMIT
echo "wt-pack/bins.txz: $(du -h wt-pack/bins.txz | cut -f1), commit $(cat wt-pack/COMMIT)"
