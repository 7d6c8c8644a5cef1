#!/usr/bin/env bash
# Backing chains seen from the mount:
#  - an image anywhere down another listed image's chain (here through a
#    backing file outside SOURCE) is served read-only, with the reason;
#  - a backing format given in the image is honoured, never re-probed: a raw
#    backing file that starts with the qcow2 magic reads as raw bytes;
#  - fsync through a descriptor opened read-only (what `sync FILE` does)
#    makes what another descriptor wrote durable: it survives kill -9.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img qemu-io getfattr sync
need_fuse
tmpdir

SRC=$T/src OUT=$T/outside MNT=$T/mnt
mkdir -p "$SRC" "$OUT" "$MNT"
M=$((1024 * 1024))
qemu-img create -q -f qcow2 "$SRC/a.qcow2" 8M
qemu-io -f qcow2 -c "write -P 0x41 0 8M" "$SRC/a.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b "$SRC/a.qcow2" -F qcow2 "$OUT/b.qcow2"
qemu-img create -q -f qcow2 -b "$OUT/b.qcow2" -F qcow2 "$SRC/c.qcow2"
# raw bytes that look like a qcow2 header, then data
{ printf 'QFI\373'; head -c $((2 * M - 4)) /dev/urandom; } > "$SRC/fake.raw"
qemu-img create -q -f qcow2 -b fake.raw -F raw "$SRC/ov.qcow2"
qemu-io -f qcow2 -c "write -P 0x55 64k 4k" "$SRC/ov.qcow2" >/dev/null
qemu-img create -q -f qcow2 "$SRC/w.qcow2" 8M

mount_imgfs "$SRC" "$MNT" --log "$T/log"

log "an image deeper down another's chain is read-only"
r=$(write_errno "$MNT/a.qcow2/disk.raw")
[[ $r == EROFS ]] || fail "a.qcow2 (depth 2 under c.qcow2) gave $r on write, expected EROFS"
why=$(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/a.qcow2/disk.raw")
[[ $why == "1: it is in the backing chain of c.qcow2 (depth 2)" ]] || fail "a.qcow2: read_only is '$why'"
echo "   a.qcow2: $why"

log "the backing format is honoured: a raw backing with the qcow2 magic reads raw"
to_raw "$SRC/ov.qcow2" "$T/ov.raw"
assert_same "$MNT/ov.qcow2/disk.raw" "$T/ov.raw" "ov.qcow2/disk.raw"
# listed on its own, the file is probed by content: a broken qcow2, left out
[[ ! -e $MNT/fake.raw ]] || fail "fake.raw is listed although its content is a broken qcow2 header"
grep -q "left out .*fake.raw" "$T/log" || fail "fake.raw left out without a reason"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.backing_format "$MNT/ov.qcow2/disk.raw") == raw ]] ||
    fail "ov.qcow2: backing format not raw"

log "sync FILE (fsync on a read-only descriptor) makes earlier writes durable"
head -c $((3 * M)) /dev/urandom > "$T/data"
dd if="$T/data" of="$MNT/w.qcow2/disk.raw" bs=1M conv=notrunc status=none   # no fsync here
sync "$MNT/w.qcow2/disk.raw"
pid=$(pgrep -f "imgfs mount .*$MNT" | head -1)
kill -9 "$pid"
for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
rc=0; qemu-img check -q "$SRC/w.qcow2" || rc=$?
[[ $rc == 0 || $rc == 3 ]] || fail "qemu-img check after kill -9: exit $rc"
qemu-img convert -O raw "$SRC/w.qcow2" "$T/w.raw"
cmp -n $((3 * M)) "$T/w.raw" "$T/data" || fail "bytes synced by 'sync FILE' were lost by kill -9"
echo "   3 MiB written, synced by 'sync FILE', intact after kill -9"
echo "PASS: backing_rules"
