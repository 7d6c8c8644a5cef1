#!/usr/bin/env bash
# Persistent dirty bitmaps through a mount: while the mount writes an image,
# its enabled bitmaps are in_use on disk; at unmount they hold exactly what
# qemu's would after the same writes, zeroes and discards (qemu-io on a
# copy is the oracle), in_use cleared, disabled bitmaps untouched. After
# kill -9 of the daemon they stay in_use (the spec's "may be outdated"),
# and the image is still check-clean.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io fallocate python3
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
M=$((1024 * 1024))
RUNS=$HERE/../interop/tools/bitmap_runs.py
img=$SRC/vm.qcow2
qemu-img create -q -f qcow2 -o cluster_size=16k "$img" 32M
qemu-img bitmap --add -g 4k "$img" daily
qemu-img bitmap --add -g 512k "$img" weekly
qemu-img bitmap --add -g 64k --disable "$img" frozen
qemu-io -f qcow2 -c "write -P 0x01 0 3M" -c "write -P 0x02 20M 1M" "$img" >/dev/null
cp "$img" "$T/ref.qcow2"
flags() { qemu-img info -U --output=json "$1" | python3 -c '
import json, sys
bm = json.load(sys.stdin)["format-specific"]["data"]["bitmaps"]
print(";".join(b["name"] + "=" + ",".join(b["flags"]) for b in bm))'; }

log "writes, a zeroed range and a punched hole through disk.raw"
mount_imgfs "$SRC" "$MNT"
D=$MNT/vm.qcow2/disk.raw
head -c $((300 * 1024)) /dev/urandom > "$T/w1"
dd if="$T/w1" of="$D" bs=64K seek=$((5 * M + 1234)) oflag=seek_bytes conv=notrunc,fsync status=none
[[ $(flags "$img") == "daily=in-use,auto;weekly=in-use,auto;frozen=" ]] ||
    fail "while the mount writes, the enabled bitmaps are in use: $(flags "$img")"
fallocate --zero-range -o $((10 * M + 4096)) -l $((2 * M)) "$D"
fallocate --punch-hole --keep-size -o $((20 * M)) -l $((512 * 1024)) "$D"
umount_imgfs "$MNT"
qemu-io -f qcow2 -c "write -s $T/w1 $((5 * M + 1234)) $((300 * 1024))" \
    -c "write -z $((10 * M + 4096)) $((2 * M))" \
    -c "discard $((20 * M)) $((512 * 1024))" "$T/ref.qcow2" >/dev/null
[[ $(flags "$img") == "daily=auto;weekly=auto;frozen=" ]] || fail "after unmount: $(flags "$img")"
diff <(python3 "$RUNS" "$T/ref.qcow2") <(python3 "$RUNS" "$img") ||
    fail "the bitmaps differ from qemu's after the same changes"
qemu-img compare -q "$T/ref.qcow2" "$img" || fail "content differs from qemu-io's"
check_clean "$img"
echo "   $(python3 "$RUNS" "$img" | grep ^daily)"

log "kill -9 while writing: the enabled bitmaps stay in use, nothing is corrupt"
"$IMGFS" mount -f "$SRC" "$MNT" > "$T/daemon.log" 2>&1 &
pid=$!
for _ in $(seq 1 100); do [[ -f $D ]] && break; sleep 0.1; done
[[ -f $D ]] || fail "mount did not come up: $(cat "$T/daemon.log")"
dd if=/dev/urandom of="$D" bs=64K count=16 seek=100 conv=notrunc,fsync status=none
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT"
[[ $(flags "$img") == "daily=in-use,auto;weekly=in-use,auto;frozen=" ]] ||
    fail "after kill -9 the enabled bitmaps must stay in use: $(flags "$img")"
qemu-img check -q "$img" || [[ $? == 3 ]] || fail "qemu-img check after kill -9: $(qemu-img check "$img" 2>&1)"
echo "   in use after the crash; qemu-img check finds no corruption"
echo "PASS: bitmaps through the mount"
