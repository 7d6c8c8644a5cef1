#!/usr/bin/env bash
# VHDX images in a mount: a Hyper-V style checkpoint chain (disk.vhdx <-
# disk_GUID1.avhdx <- disk_GUID2.avhdx, made by imgfs since qemu cannot)
# mounts as one disk with each checkpoint in layers/, reading as the test
# computes; a qemu-made disk reads like qemu and its SEEK_DATA/SEEK_HOLE
# follow imgfs map; writes through the mount (dd with fsync, a punched
# block, a grow by truncate and by user.imgfs.resize, a shrink by ctl)
# land where qemu reads them after unmount (qemu-img check clean);
# a checkpoint whose parent changed since it was made is served read-only
# with parent_linkage named; one whose parent is gone is left out with the
# parent's name in the log, the rest serving on.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io getfattr setfattr cmp fallocate
need_fuse
tmpdir
IMGWRITE=${IMGFS_BUILD:-$ROOT/build}/tests/interop/imgwrite
[[ -x $IMGWRITE ]] || fail "imgwrite not built: $IMGWRITE"
INSPECT=$HERE/../interop/tools/vhdx_inspect.py

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
M=$((1024 * 1024))
# model FILE OFF PATTERN LEN: the same write into an expected content
model() {
    "$PY" - "$@" <<'PY'
import sys
path, off, pat, n = sys.argv[1], int(sys.argv[2], 0), sys.argv[3], int(sys.argv[4], 0)
with open(path, "r+b") as f:
    f.seek(off)
    f.write(bytes(n) if pat == "zero" else bytes([int(pat, 0)]) * n)
PY
}
w() { "$IMGWRITE" "$1" "$3" "$4" "$5" >/dev/null || fail "imgwrite $*"; model "$2" "$3" "$4" "$5"; }

cd "$SRC"
"$IMGFS" create -q -f vhdx -o block_size=1M disk.vhdx 32M
head -c $((32 * M)) /dev/zero >"$T/gold.raw"
w disk.vhdx "$T/gold.raw" 0 0x11 $((3 * M))
w disk.vhdx "$T/gold.raw" $((20 * M + 7)) 0x12 70000
"$IMGFS" create -q -f vhdx -b disk.vhdx -F vhdx disk_GUID1.avhdx
cp "$T/gold.raw" "$T/one.raw"
w disk_GUID1.avhdx "$T/one.raw" $((M / 2 + 1)) 0x21 $((M))
"$IMGFS" create -q -f vhdx -b disk_GUID1.avhdx -F vhdx disk_GUID2.avhdx
cp "$T/one.raw" "$T/two.raw"
w disk_GUID2.avhdx "$T/two.raw" 100 0x31 200
w disk_GUID2.avhdx "$T/two.raw" $((31 * M)) 0x32 $((M))
# A checkpoint of a disk written since: stale. And one whose parent is gone.
"$IMGFS" create -q -f vhdx -o block_size=1M other.vhdx 8M
"$IMGFS" create -q -f vhdx -b other.vhdx -F vhdx stale.avhdx
"$IMGWRITE" other.vhdx 0 0x41 512 >/dev/null
"$IMGFS" create -q -f vhdx gone.vhdx 8M
"$IMGFS" create -q -f vhdx -b gone.vhdx -F vhdx orphan.avhdx
rm gone.vhdx
qemu-img create -q -f vhdx -o block_size=8M q.vhdx 64M
qemu-io -f vhdx -c "write -P 0x51 $((3 * M)) 8192" -c "write -P 0x52 $((40 * M + 5)) 100000" q.vhdx >/dev/null
"$IMGFS" map --output=json q.vhdx >"$T/q.map.json"
cd "$T"

mount_imgfs "$SRC" "$MNT" --log "$T/log"
log "each image listed; the one without its parent left out, its parent named"
got=$(ls "$MNT" | tr '\n' ' ')
[[ $got == "disk.vhdx disk_GUID1.avhdx disk_GUID2.avhdx other.vhdx q.vhdx stale.avhdx " ]] || fail "listed: $got"
grep -q "left out $SRC/orphan.avhdx: .*gone.vhdx" "$T/log" || fail "the log does not name the missing parent: $(cat "$T/log")"
echo "   $got"

log "the checkpoint chain as one disk, each checkpoint in layers/"
assert_same "$MNT/disk_GUID2.avhdx/disk.raw" "$T/two.raw" "disk_GUID2.avhdx/disk.raw"
layers=$(ls "$MNT/disk_GUID2.avhdx/layers" | tr '\n' ' ')
[[ $layers == "0-disk_GUID2.avhdx.raw 1-disk_GUID1.avhdx.raw 2-disk.vhdx.raw " ]] || fail "layers: $layers"
assert_same "$MNT/disk_GUID2.avhdx/layers/1-disk_GUID1.avhdx.raw" "$T/one.raw" "layer 1"
assert_same "$MNT/disk_GUID2.avhdx/layers/2-disk.vhdx.raw" "$T/gold.raw" "layer 2"
[[ $(getfattr --only-values -n user.imgfs.format "$MNT/disk_GUID2.avhdx/disk.raw") == vhdx ]] || fail "format attribute"

log "a qemu-made disk: its bytes, and its holes where imgfs map has them"
qemu-img convert -U -f vhdx -O raw "$SRC/q.vhdx" "$T/q.raw"
assert_same "$MNT/q.vhdx/disk.raw" "$T/q.raw" "q.vhdx/disk.raw"
seek_map_is "$MNT/q.vhdx/disk.raw" "$T/q.map.json" || fail "q.vhdx: SEEK_DATA/SEEK_HOLE differ from imgfs map"
cp --sparse=always "$MNT/q.vhdx/disk.raw" "$T/q.copy"
cmp "$T/q.copy" "$T/q.raw" || fail "cp --sparse of q.vhdx differs"
[[ $(stat -c %b "$T/q.copy") -lt $((8 * M / 512)) ]] || fail "cp --sparse did not keep the holes"

log "a stale checkpoint is read-only, with parent_linkage named"
ro=$(getfattr --only-values -n user.imgfs.read_only "$MNT/stale.avhdx/disk.raw")
[[ $ro == 1:*parent_linkage* ]] || fail "stale.avhdx: user.imgfs.read_only is '$ro'"
[[ $(write_errno "$MNT/stale.avhdx/disk.raw") == EROFS ]] || fail "stale.avhdx took a write"
[[ $(write_errno "$MNT/disk_GUID1.avhdx/disk.raw") == EROFS ]] || fail "a checkpoint with a child took a write"
echo "   $ro"

log "writes through the mount"
head -c $((3 * M + 333)) /dev/urandom >"$T/data"
write_at "$T/data" 0 "$MNT/disk_GUID2.avhdx/disk.raw" $((5 * M + 17)) $((3 * M + 333)) fsync
write_at "$T/data" 0 "$T/two.raw" $((5 * M + 17)) $((3 * M + 333))
write_at "$T/data" 0 "$MNT/q.vhdx/disk.raw" $((9 * M + 1)) $((M))
write_at "$T/data" 0 "$T/q.raw" $((9 * M + 1)) $((M))
fallocate -p -o $((40 * M)) -l $((8 * M)) "$MNT/q.vhdx/disk.raw"  # a whole block
model "$T/q.raw" $((40 * M)) zero $((8 * M))
sync "$MNT/q.vhdx/disk.raw"
truncate -s 80M "$MNT/q.vhdx/disk.raw"  # a grow, through the mount
head -c $((16 * M)) /dev/zero >>"$T/q.raw"
assert_size "$MNT/q.vhdx/disk.raw" $((80 * M)) "q.vhdx after truncate"
setfattr -n user.imgfs.resize -v +16M "$MNT/q.vhdx/disk.raw"  # and through the attribute
head -c $((16 * M)) /dev/zero >>"$T/q.raw"
assert_size "$MNT/q.vhdx/disk.raw" $((96 * M)) "q.vhdx after user.imgfs.resize"
echo "resize 88M --shrink" >"$MNT/q.vhdx/ctl"  # a shrink through ctl
truncate -s 88M "$T/q.raw"
assert_size "$MNT/q.vhdx/disk.raw" $((88 * M)) "q.vhdx after ctl resize --shrink"
grep -q "^last: resize 88M --shrink: ok" "$MNT/q.vhdx/ctl" || fail "ctl: $(cat "$MNT/q.vhdx/ctl")"
assert_same "$MNT/disk_GUID2.avhdx/disk.raw" "$T/two.raw" "disk_GUID2.avhdx after writes"
umount_imgfs "$MNT"
check_clean "$SRC/q.vhdx"
qemu-img convert -f vhdx -O raw "$SRC/q.vhdx" "$T/q.after.raw"
cmp "$T/q.after.raw" "$T/q.raw" || fail "q.vhdx after unmount differs from what was written"
"$IMGFS" convert -O raw "$SRC/disk_GUID2.avhdx" "$T/two.after.raw" || fail "imgfs convert of the chain"
cmp "$T/two.after.raw" "$T/two.raw" || fail "disk_GUID2.avhdx after unmount differs from what was written"
"$PY" "$INSPECT" "$SRC/disk_GUID2.avhdx" "$SRC/disk_GUID1.avhdx" >"$T/fields" || fail "disk_GUID2.avhdx: $(tail -n1 "$T/fields")"
echo "   written and read back; fields as the specification says"
echo "PASS: vhdx mount"
