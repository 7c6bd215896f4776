#!/usr/bin/env bash
# Here (Debian 12, with a package registry): puts what the GPU machine lacks into .carry/ (git-ignored):
# the libpcre2-dev package (headers) and the tokenizer.json. Pass carry: [".carry"] to the device tool.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .carry
ls .carry/libpcre2-dev_*.deb >/dev/null 2>&1 || (cd .carry && apt-get download libpcre2-dev 2>/dev/null)
tok=$(bash scripts/fetch-tokenizer.sh)
cp "$tok" .carry/tokenizer.json
# The device's copy of the tree has no .git: record the commit for the benchmark reports.
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src tests scripts || echo -dirty)" > .carry/COMMIT
echo ".carry ready: $(ls .carry | tr '\n' ' ')"
