#!/usr/bin/env bash
# qcow2 images corrupted on purpose (bytes patched by this script, no
# checked-in binaries) are refused or served read-only with a logged reason,
# never misread, never written, never a crash of the daemon. Damage found
# while serving (bad L1/L2 entries) fails the reads that touch it (EIO) and
# makes the image read-only from then on, as qemu does: the attempted write
# gets EROFS and sets the corrupt bit, the one change such an image gets.
#
#   corrupt_bit         the corrupt incompatible bit        -> served read-only (EROFS), reads like qemu
#   unknown_bit         an unknown incompatible bit          -> absent, reason logged
#   reftable_unaligned  refcount table offset not aligned    -> absent, reason logged
#   backing_past_eof    backing name offset outside header   -> absent, reason logged
#   snaptable_past_eof  snapshot table past EOF              -> absent, reason logged
#   l2_unaligned        L2 entry of cluster 0 unaligned      -> EIO at offset 0, the rest reads like qemu, then read-only
#   l1_unaligned        L1 entry 0 unaligned                 -> EIO at offset 0, then read-only
#   compressed_garbage  cluster 0 "compressed" at the L1     -> EIO at offset 0, the rest reads like qemu, then read-only
#   l2_past_eof         cluster 0 at 1 TiB                   -> EIO or qemu's content (zeros)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io cmp mountpoint getfattr
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt EXP=$T/exp
mkdir -p "$SRC" "$MNT" "$EXP"
M=$((1024 * 1024))

cat > "$T/patch.py" <<'PY'
import struct, sys
def be64(f, off):
    f.seek(off)
    return struct.unpack(">Q", f.read(8))[0]
def put64(f, off, v):
    f.seek(off)
    f.write(struct.pack(">Q", v))
path, what = sys.argv[1], sys.argv[2]
with open(path, "r+b") as f:
    l1 = be64(f, 40)
    l2 = be64(f, l1) & 0x00fffffffffffe00
    e0 = be64(f, l2)
    if what == "corrupt_bit": put64(f, 72, be64(f, 72) | 2)
    elif what == "clear_corrupt_bit": put64(f, 72, be64(f, 72) & ~2)
    elif what == "unknown_bit": put64(f, 72, be64(f, 72) | (1 << 10))
    elif what == "l2_unaligned": put64(f, l2, e0 + 512)
    elif what == "l2_past_eof": put64(f, l2, (1 << 40) | (1 << 63))
    elif what == "l1_unaligned": put64(f, l1, be64(f, l1) + 512)
    elif what == "compressed_garbage": put64(f, l2, (1 << 62) | l1)
    elif what == "reftable_unaligned": put64(f, 48, be64(f, 48) + 8)
    elif what == "snaptable_past_eof":
        f.seek(60); f.write(struct.pack(">I", 1)); put64(f, 64, 1 << 40)
    elif what == "backing_past_eof":
        put64(f, 8, 1 << 40); f.seek(16); f.write(struct.pack(">I", 100))
    else:
        sys.exit("unknown patch " + what)
PY

log "creating the fixtures"
qemu-img create -q -f qcow2 "$T/proto.qcow2" 4M
qemu-io -f qcow2 -c "write -P 0x5a 0 1M" -c "write -P 0x5b $((2 * M)) 1M" "$T/proto.qcow2" >/dev/null
to_raw "$T/proto.qcow2" "$EXP/proto.raw"
ABSENT=(unknown_bit reftable_unaligned backing_past_eof snaptable_past_eof)
EIO0=(l2_unaligned l1_unaligned compressed_garbage)
ALL=(corrupt_bit "${ABSENT[@]}" "${EIO0[@]}" l2_past_eof)
for w in "${ALL[@]}"; do
    cp "$T/proto.qcow2" "$SRC/$w.qcow2"
    "$PY" "$T/patch.py" "$SRC/$w.qcow2" "$w"
done
(cd "$SRC" && sha256sum -- *) > "$T/sums.before"

mount_imgfs "$SRC" "$MNT" --log "$T/log"

# read_errno PATH OFFSET LENGTH: prints OK or the errno name of a read
read_errno() {
    "$PY" - "$@" <<'PY'
import errno, os, sys
try:
    fd = os.open(sys.argv[1], os.O_RDONLY)
    try:
        os.pread(fd, int(sys.argv[3]), int(sys.argv[2]))
    finally:
        os.close(fd)
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
PY
}

log "corrupt bit: served read-only"
d=$MNT/corrupt_bit.qcow2/disk.raw
assert_same "$d" "$EXP/proto.raw" "corrupt_bit.qcow2/disk.raw"
r=$(write_errno "$d")
[[ $r == EROFS ]] || fail "corrupt_bit.qcow2: a write gave $r, expected EROFS"
grep -q "corrupt_bit.qcow2.*corrupt" "$T/log" || fail "corrupt_bit.qcow2: no logged reason for read-only: $(cat "$T/log")"
echo "   corrupt_bit: read-only, reads like qemu, reason logged"

log "refused at open: absent, with the reason logged"
for w in "${ABSENT[@]}"; do
    [[ ! -e $MNT/$w.qcow2 ]] || fail "$w.qcow2 is listed although it cannot be opened"
    line=$(grep "$w.qcow2" "$T/log") || fail "$w.qcow2: left out without a logged reason"
    echo "   $w: $line"
done

log "damaged metadata: EIO where the damage is, nothing else"
for w in "${EIO0[@]}"; do
    d=$MNT/$w.qcow2/disk.raw
    r=$(read_errno "$d" 0 65536)
    [[ $r == EIO ]] || fail "$w.qcow2: reading offset 0 gave $r, expected EIO"
    # a write far from the damage is refused too: the metadata is suspect
    r=$(write_errno "$d" $((3 << 20)))
    [[ $r == EROFS ]] || fail "$w.qcow2: a write after the damage was found gave $r, expected EROFS"
    ro=$(getfattr --absolute-names --only-values -n user.imgfs.read_only "$d")
    [[ $ro == "1: metadata found damaged: "* ]] || fail "$w.qcow2: user.imgfs.read_only is '$ro'"
    mount_alive "$MNT" || fail "mount stopped answering after $w"
    echo "   $w: EIO at offset 0, then read-only ($ro)"
done
for w in l2_unaligned compressed_garbage; do
    cmp -s <(dd if="$MNT/$w.qcow2/disk.raw" bs=1M skip=1 status=none) \
        <(dd if="$EXP/proto.raw" bs=1M skip=1 status=none) ||
        fail "$w.qcow2: the undamaged part does not read like qemu's view"
done
r=$(read_errno "$MNT/l2_past_eof.qcow2/disk.raw" 0 65536)
if [[ $r == OK ]]; then
    to_raw "$SRC/l2_past_eof.qcow2" "$EXP/l2_past_eof.raw"
    assert_same "$MNT/l2_past_eof.qcow2/disk.raw" "$EXP/l2_past_eof.raw" "l2_past_eof.qcow2/disk.raw"
    echo "   l2_past_eof: reads like qemu (zeros)"
else
    [[ $r == EIO ]] || fail "l2_past_eof.qcow2: reading gave $r, expected EIO or qemu's content"
    echo "   l2_past_eof: EIO"
fi

mount_alive "$MNT" || fail "mount not answering"
umount_imgfs "$MNT"
for w in "${EIO0[@]}"; do
    [[ $(qemu-img info --output=json "$SRC/$w.qcow2" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["corrupt"])') == True ]] ||
        fail "$w.qcow2: the corrupt bit was not set"
    # the header's incompatible-features word was the only change
    "$PY" "$T/patch.py" "$SRC/$w.qcow2" clear_corrupt_bit
done
(cd "$SRC" && sha256sum -- *) > "$T/sums.after"
diff "$T/sums.before" "$T/sums.after" || fail "a corrupt image was modified beyond its corrupt bit"
echo "   damaged images got the corrupt bit and nothing else; no other image was modified"
echo "PASS: corrupt_qcow2"
