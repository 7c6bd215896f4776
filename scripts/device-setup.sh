#!/usr/bin/env bash
# On the GPU machine (Ubuntu 24.04, no PCRE2 headers, no package registry): makes PCRE2 buildable from the
# Debian libpcre2-dev package carried in .carry/ (scripts/device-prep.sh fetches it here), then configures
# and builds mxserve with CUDA into build-device (-j16). Source it or run it; prints the build folder.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -f /usr/include/pcre2.h ] && [ ! -f /usr/local/include/pcre2.h ]; then
  deb=$(ls .carry/libpcre2-dev_*.deb 2>/dev/null | head -1)
  [ -n "$deb" ] || { echo "device-setup: no PCRE2 headers and no .carry/libpcre2-dev_*.deb (run scripts/device-prep.sh here)" >&2; exit 1; }
  rm -rf /tmp/pcre2 && dpkg -x "$deb" /tmp/pcre2
  mkdir -p /usr/local/include /usr/local/lib/pkgconfig
  cp /tmp/pcre2/usr/include/pcre2.h /usr/local/include/
  so=$(ls /usr/lib/x86_64-linux-gnu/libpcre2-8.so.0* | head -1)
  ln -sf "$so" /usr/local/lib/libpcre2-8.so
  cat > /usr/local/lib/pkgconfig/libpcre2-8.pc <<PC
prefix=/usr/local
libdir=/usr/local/lib
includedir=/usr/local/include
Name: libpcre2-8
Description: PCRE2 (8-bit) from the carried Debian package
Version: 10.42
Libs: -L/usr/local/lib -lpcre2-8
Cflags: -I/usr/local/include
PC
fi
export PKG_CONFIG_PATH=/usr/local/lib/pkgconfig:${PKG_CONFIG_PATH:-}
BUILD_DIR="${BUILD_DIR:-build-device}"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMXS_CUDA=ON ${CMAKE_ARGS:-} >/dev/null
# TARGETS="a b": build only those (a helper checking one kernel test); default: everything.
cmake --build "$BUILD_DIR" -j "${JOBS:-16}" ${TARGETS:+--target $TARGETS}
echo "$BUILD_DIR"
