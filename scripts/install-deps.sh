#!/usr/bin/env bash
# Installs the Debian/Ubuntu packages mxserve builds with (needs root or sudo). Idempotent: does nothing
# when everything is present. The CUDA toolkit is optional (CPU-only build without it).
set -euo pipefail
pkgs=(build-essential cmake ninja-build pkg-config libcli11-dev nlohmann-json3-dev libboost-dev libpcre2-dev
      libgtest-dev libgmock-dev libbenchmark-dev nodejs npm curl ca-certificates
      chromium)  # chromium: the chat page browser test (tests/e2e/chat_page.test.mjs)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere (nvm, NodeSource): accept working binaries.
if command -v node >/dev/null && command -v npm >/dev/null; then
  missing=("${missing[@]/nodejs}"); missing=("${missing[@]/npm}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if [ ${#missing[@]} -eq 0 ]; then
  echo "install-deps: all packages present"
  exit 0
fi
echo "install-deps: installing ${missing[*]}"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
