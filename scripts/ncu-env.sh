# Sourced by the device-profile scripts (from the repository root): the output folder $OUT (created), the
# binary $BIN, and $NCU, Nsight Compute's command line (the script exits when there is none).
OUT="${OUT:-/tmp/mxs-out}"; mkdir -p "$OUT"
BIN=build-device/mxserve
NCU=$(command -v ncu || ls /opt/nvidia/nsight-compute/*/ncu /usr/local/cuda/bin/ncu 2>/dev/null | head -1)
[ -x "$NCU" ] || { echo "$(basename "$0"): ncu not found"; exit 1; }
