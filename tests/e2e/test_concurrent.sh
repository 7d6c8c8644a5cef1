#!/usr/bin/env bash
# Concurrent reads/writes from several threads on one disk.raw (qcow2 overlay
# over a qcow2 base with data), verified by concurrent_rw against an in-memory
# model (range-locked so the expected content is well defined), then after
# umount: qemu-img check clean and qemu-img compare model == image, base
# untouched.
#
# Uses the concurrent_rw helper built from tests/e2e/concurrent_rw.cpp, at
# $IMGFS_BUILD/tests/e2e/concurrent_rw.  Knobs: CONCURRENT_SEED (default
# 20240601), CONCURRENT_THREADS (4), CONCURRENT_OPS (ops per thread, 1000).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io cmp
need_fuse

CRW=${CONCURRENT_RW:-$IMGFS_BUILD/tests/e2e/concurrent_rw}
[[ -x $CRW ]] || fail "helper not built: $CRW (target concurrent_rw from tests/e2e/concurrent_rw.cpp)"
SEED=${CONCURRENT_SEED:-20240601}
THREADS=${CONCURRENT_THREADS:-4}
OPS=${CONCURRENT_OPS:-1000}

tmpdir
SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
M=$((1024 * 1024))

log "creating base with data + overlay (64 MiB)"
(
    cd "$SRC"
    qemu-img create -q -f qcow2 base.qcow2 64M
    qemu-io -f qcow2 -c "write -P 0x11 0 $((2 * M))" -c "write -P 0x22 $((10 * M + 12345)) $((3 * M))" \
        -c "write -P 0x33 $((40 * M)) $((8 * M))" -c "write -P 0x44 $((64 * M - 65536)) 65536" base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 vm.qcow2
    qemu-io -f qcow2 -c "write -P 0x55 $((1 * M)) $((2 * M))" -c "write -z $((41 * M)) $((1 * M))" vm.qcow2 >/dev/null
)
to_raw "$SRC/base.qcow2" "$T/base.before.raw"

mount_imgfs "$SRC" "$MNT"
DISK=$MNT/vm.qcow2/disk.raw
assert_size "$DISK" $((64 * M)) "vm.qcow2/disk.raw"

log "concurrent_rw seed=$SEED threads=$THREADS ops=$OPS"
rc=0
"$CRW" "$DISK" "$SEED" "$THREADS" "$OPS" "$T/model.raw" || rc=$?
[[ $rc == 0 ]] || fail "concurrent_rw reported a mismatch or I/O error (exit $rc, seed $SEED)"
mount_alive "$MNT" || fail "mount not answering after the run"
assert_same "$DISK" "$T/model.raw" "disk.raw vs model through the mount"
umount_imgfs "$MNT"
! mountpoint -q "$MNT" || fail "still mounted after imgfs umount"

log "after umount"
check_clean "$SRC/vm.qcow2"
check_clean "$SRC/base.qcow2"
out=$(qemu-img compare -f raw -F qcow2 "$T/model.raw" "$SRC/vm.qcow2" 2>&1) ||
    fail "image differs from the model (seed $SEED): $out"
echo "   model vs vm.qcow2: $out"
to_raw "$SRC/base.qcow2" "$T/base.after.raw"
cmp -s "$T/base.after.raw" "$T/base.before.raw" || fail "backing file base.qcow2 was modified"

echo "PASS: concurrent"
