#!/usr/bin/env bash
# `imgfs bench` against `qemu-img bench`: the same lines (the time aside)
# and exit codes for reads and writes, depths, sizes, steps, offsets and
# flush intervals; what the writes leave is read back with qemu-io (the
# pattern at every request's offset, wrapping as qemu-img wraps) and the
# image passes qemu-img check.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io
need_tool "$IMGFS"
tmpdir
cd "$T"

qcreate -f qcow2 b.qcow2 4M
qcreate -f vmdk b.vmdk 4M
untimed() { sed -E 's/Run completed in [0-9.]+ seconds\./Run completed./'; }
n=0
for f in b.qcow2 b.vmdk; do
    for args in "-c 1000" "-c 200 -d 4 -s 8k -S 16k -o 512" "-c 50 -w --pattern=7 -d 8 -s 64k" \
        "-c 300 -w --flush-interval=100 -d 4" "-c 100 -w --flush-interval=10 --no-drain -d 2" "-c 0" \
        "--flush-interval=10 -c 5" "-c 100 -w --flush-interval=10" "-c 10 -s 8M"; do
        # shellcheck disable=SC2086
        q=$(qemu-img bench $args "$f" 2>&1 | untimed; echo "exit ${PIPESTATUS[0]}")
        # shellcheck disable=SC2086
        i=$("$IMGFS" bench $args "$f" 2>&1 | untimed; echo "exit ${PIPESTATUS[0]}")
        [[ ${i//imgfs:/qemu-img:} == "$q" ]] || {
            diff <(echo "$q") <(echo "$i") || true
            fail "imgfs bench $args $f differs from qemu-img bench"
        }
        n=$((n + 1))
    done
    qemu-img check -q "$f" || fail "$f after imgfs bench: check failed"
done
echo "   $n cases print as qemu-img bench"

# 40 writes of 64k at step 96k wrap before 4M - 64k: every request's bytes hold the pattern
qcreate -f qcow2 w.qcow2 4M
"$IMGFS" bench -q -c 40 -w --pattern=9 -s 64k -S 96k -d 4 w.qcow2
off=0
for _ in $(seq 1 40); do
    qio w.qcow2 qcow2 "read -P 9 $off 64k"
    off=$(((off + 98304) % (4194304 - 65536)))
done
qemu-img check -q w.qcow2 || fail "bench -w: check failed"
echo "bench: all cases agree with qemu-img"
