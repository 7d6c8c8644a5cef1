#!/usr/bin/env bash
# `imgfs measure` against `qemu-img measure`: the same lines (human) and
# the same JSON, exit codes equal, for raw and qcow2 output (cluster sizes,
# refcount widths, compat 0.10), from raw, qcow2 (chains, zero clusters,
# compressed, bitmaps, a snapshot) and vmdk sources, and --size.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io
need_tool "$IMGFS"
tmpdir
cd "$T"
M=$MiB

qcreate -f qcow2 a.qcow2 100M
qio a.qcow2 qcow2 "write -P 1 0 3M" "write -P 2 10M 1000" "write -z 20M 1M" "write -P 3 $((50 * M + 70000)) 200000"
qcreate -f raw r.raw 100M
qio r.raw raw "write -P 1 0 3M" "write -P 1 $((77 * M + 512)) 4k"
qcreate -f qcow2 odd.qcow2 $((33 * M + 12345))
qio odd.qcow2 qcow2 "write -P 1 $((33 * M)) 12345"
qcreate -f qcow2 -b a.qcow2 -F qcow2 top.qcow2
qio top.qcow2 qcow2 "write -P 5 60M 64k"
qemu-img convert -c -O qcow2 a.qcow2 comp.qcow2
qemu-img convert -O vmdk a.qcow2 a.vmdk
cp a.qcow2 bm.qcow2
qemu-img bitmap --add -g 64k bm.qcow2 b1
qemu-img bitmap --add -g 4k bm.qcow2 a-longer-bitmap-name
cp a.qcow2 snap.qcow2
qemu-img snapshot -c s1 snap.qcow2
qio snap.qcow2 qcow2 "write -P 7 80M 8M"

same() { same_as_qemu measure "$@"; }
for f in a.qcow2 r.raw odd.qcow2 top.qcow2 comp.qcow2 a.vmdk bm.qcow2 snap.qcow2; do
    for o in "-O qcow2" "-O raw" "-O qcow2 -o cluster_size=4k" "-O qcow2 -o cluster_size=2M,refcount_bits=64" \
        "-O qcow2 -o compat=0.10" "-O qcow2 -o refcount_bits=1,cluster_size=512"; do
        # shellcheck disable=SC2086
        { same $o "$f"; same --output=json $o "$f"; }
    done
done
same -O qcow2 -l s1 snap.qcow2
same --output=json -O qcow2 -l snapshot.name=s1 snap.qcow2
for s in 1G 100M 12345 1T; do
    same --size "$s" -O qcow2
    same --size "$s" -O raw
    same --output=json --size "$s" -O qcow2 -o cluster_size=512
done
echo "   $SAME_CASES cases print as qemu-img measure"

err() { errs_as_qemu measure "$@"; }
err -O qcow2
err -O qcow2 --size 1G a.qcow2
err -O vmdk a.qcow2
err -O qcow2 nowhere.qcow2
err -O qcow2 -o cluster_size=3k a.qcow2
err -O nosuch a.qcow2
echo "measure: all cases agree with qemu-img"
