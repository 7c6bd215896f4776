# Sourced (from the repository root) by the device scripts that run binaries built here and carried xz-packed
# (device-bins-check.sh, device-table.sh, device-120b.sh): sets OUT (logs; default /tmp/mxs-out), links /work/main (the
# test data paths are compiled in), unpacks wt-pack/bins.txz into wt-bin/, exports MXSERVE_COMMIT (the commit the
# benchmark tables name: the device copy's git metadata is not this checkout's) and sets B=wt-bin/mxserve.
# Pack here with scripts/pack-bins.sh; carry wt-pack.
OUT=${OUT:-/tmp/mxs-out}; mkdir -p "$OUT"
[ -d /work/main ] || { mkdir -p /work && ln -sfn "$PWD" /work/main; }
if [ -f wt-pack/bins.txz ]; then mkdir -p wt-bin && xz -dc wt-pack/bins.txz | tar -C wt-bin -xf -; fi
[ -f wt-pack/COMMIT ] && export MXSERVE_COMMIT="$(cat wt-pack/COMMIT)"
B=wt-bin/mxserve
[ -x "$B" ] || { echo "$(basename "$0"): no wt-bin/mxserve: pack it with scripts/pack-bins.sh and carry wt-pack"; exit 1; }
