#!/usr/bin/env bash
# Broken images next to a good one must not break the mount or the daemon.
#
# SOURCE contains:
#   good.qcow2      valid, with data                     -> must read correctly (and be writable)
#   empty.img       0-byte raw file                      -> DECISION: a valid empty disk, like qemu
#                                                           (`qemu-img info` says raw, 0 bytes): it must
#                                                           be listed, disk.raw st_size 0, reads give EOF
#   notes.txt       not an image                         -> absent
# Images qemu refuses to open, each must be ABSENT from the tree or give EIO
# on access (stat/open/read of its disk.raw):
#   l1rand.qcow2    L1 table offset (header byte 40, BE u64) = garbage, unaligned
#   badver.qcow2    version 99
#   bigl1.qcow2     L1 size (byte 36) = 0x7fffffff
#   magic.qcow2     only the 4 magic bytes
#   orphan.qcow2    backing file missing
#   loopa/loopb.qcow2  backing files of each other (infinite chain)
# Images qemu accepts although their metadata lies beyond EOF (qemu reads the
# missing tables as zeros):
#   trunc.qcow2     first 512 bytes of a qcow2 with data (header only)
#   badl1.qcow2     L1 table offset = 1 TiB (cluster aligned, beyond EOF)
# -> absent, EIO, or exactly qemu's content (`qemu-img convert`) are accepted.
#
# Afterwards the daemon must still answer, the good image still reads and
# writes correctly, no image was modified except good.qcow2, imgfs umount
# works and good.qcow2 passes qemu-img check.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io dd cmp sha256sum mountpoint
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt EXP=$T/exp
mkdir -p "$SRC" "$MNT" "$EXP"
M=$((1024 * 1024))

# patch FILE OFFSET HEXBYTES (e.g. "00 00 01 00")
patch_bytes() {
    local f=$1 off=$2 hex=$3 esc="" b
    for b in $hex; do esc+="\\x$b"; done
    # shellcheck disable=SC2059
    printf "$esc" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}

log "creating good and broken images"
(
    cd "$SRC"
    qemu-img create -q -f qcow2 good.qcow2 8M
    qemu-io -f qcow2 -c "write -P 0x5a 1000 100000" -c "write -P 0x5b $((5 * M + 3)) 70000" good.qcow2 >/dev/null
    cp good.qcow2 "$T/proto.qcow2"
    head -c 512 "$T/proto.qcow2" > trunc.qcow2
    cp "$T/proto.qcow2" badl1.qcow2 && patch_bytes badl1.qcow2 40 "00 00 01 00 00 00 00 00"
    cp "$T/proto.qcow2" l1rand.qcow2 && patch_bytes l1rand.qcow2 40 "de ad be ef ca fe ba be"
    cp "$T/proto.qcow2" badver.qcow2 && patch_bytes badver.qcow2 4 "00 00 00 63"
    cp "$T/proto.qcow2" bigl1.qcow2 && patch_bytes bigl1.qcow2 36 "7f ff ff ff"
    printf 'QFI\xfb' > magic.qcow2
    qemu-img create -q -f qcow2 gone.qcow2 8M
    qemu-img create -q -f qcow2 -b gone.qcow2 -F qcow2 orphan.qcow2
    rm gone.qcow2
    qemu-img create -q -f qcow2 loopa.qcow2 8M
    qemu-img create -q -f qcow2 -b loopa.qcow2 -F qcow2 loopb.qcow2
    qemu-img rebase -u -b loopb.qcow2 -F qcow2 loopa.qcow2
    : > empty.img
    echo "not an image" > notes.txt
)
REFUSED=(l1rand.qcow2 badver.qcow2 bigl1.qcow2 magic.qcow2 orphan.qcow2 loopa.qcow2 loopb.qcow2)
LENIENT=(trunc.qcow2 badl1.qcow2)

# the setup really is what the comments say
for img in "${REFUSED[@]}"; do
    [[ $img == magic.qcow2 ]] && continue  # qemu probes a 4-byte file as raw; -f qcow2 refuses it
    if qemu-img info -f qcow2 --backing-chain "$SRC/$img" >/dev/null 2>&1; then fail "test setup: qemu opens $img"; fi
done
qemu-img info -f qcow2 "$SRC/magic.qcow2" >/dev/null 2>&1 && fail "test setup: qemu opens magic.qcow2 as qcow2"
to_raw "$SRC/good.qcow2" "$EXP/good.raw"
for img in "${LENIENT[@]}"; do to_raw "$SRC/$img" "$EXP/$img.raw"; done
(cd "$SRC" && sha256sum -- *) > "$T/sums.before"

mount_imgfs "$SRC" "$MNT"
mount_alive "$MNT" || fail "mount is not answering right after mount"

log "good image"
assert_size "$MNT/good.qcow2/disk.raw" $((8 * M)) "good.qcow2/disk.raw"
assert_same "$MNT/good.qcow2/disk.raw" "$EXP/good.raw" "good.qcow2/disk.raw"
[[ ! -e $MNT/notes.txt ]] || fail "notes.txt is visible"

log "empty raw image: a valid 0-byte disk"
[[ -d $MNT/empty.img ]] || fail "empty.img (0-byte raw) not listed"
assert_size "$MNT/empty.img/disk.raw" 0 "empty.img/disk.raw"
[[ $(head -c 10 "$MNT/empty.img/disk.raw" | wc -c) == 0 ]] || fail "reading empty.img/disk.raw returned data"
"$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$MNT/empty.img/info.json" || fail "empty.img/info.json is not JSON"
echo "   empty.img OK"

# probe MNT NAME [EXPECTED_RAW]: prints absent|EIO|qemu-content, exit 1 with a
# message for anything else
probe() {
    timeout 20 "$PY" - "$@" <<'EOF'
import errno, os, sys
mnt, name = sys.argv[1], sys.argv[2]
exp = sys.argv[3] if len(sys.argv) > 3 else None
try:
    if name not in os.listdir(mnt):
        print("absent"); sys.exit(0)
    d = os.path.join(mnt, name)
    os.listdir(d)
    p = os.path.join(d, "disk.raw")
    size = os.stat(p).st_size
    got = bytearray()
    with open(p, "rb", buffering=0) as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                break
            got += b
except OSError as e:
    if e.errno == errno.EIO:
        print("EIO"); sys.exit(0)
    sys.exit(f"{name}: {e} (expected absent or EIO)")
if len(got) != size:
    sys.exit(f"{name}: read {len(got)} bytes but st_size is {size}")
if exp is not None and got == open(exp, "rb").read():
    print("qemu-content"); sys.exit(0)
sys.exit(f"{name}: readable ({size} bytes) although " +
         ("its content differs from qemu's view" if exp else "qemu refuses to open it"))
EOF
}

log "images qemu refuses: absent or EIO"
for img in "${REFUSED[@]}"; do
    r=$(probe "$MNT" "$img") || fail "$img"
    echo "   $img: $r"
    mount_alive "$MNT" || fail "mount stopped answering after probing $img"
done
log "images with metadata beyond EOF: absent, EIO or qemu's content"
for img in "${LENIENT[@]}"; do
    r=$(probe "$MNT" "$img" "$EXP/$img.raw") || fail "$img"
    echo "   $img: $r"
    mount_alive "$MNT" || fail "mount stopped answering after probing $img"
done

log "daemon still alive and serving the good image"
mount_alive "$MNT" || fail "mount not answering"
assert_same "$MNT/good.qcow2/disk.raw" "$EXP/good.raw" "good.qcow2/disk.raw after probing"
head -c 5000 /dev/urandom > "$T/w"
write_at "$T/w" 0 "$MNT/good.qcow2/disk.raw" $((3 * M + 7)) 5000 fsync || fail "write to good.qcow2 failed"
write_at "$T/w" 0 "$EXP/good.raw" $((3 * M + 7)) 5000
assert_same "$MNT/good.qcow2/disk.raw" "$EXP/good.raw" "good.qcow2/disk.raw after a write"
umount_imgfs "$MNT"
! mountpoint -q "$MNT" || fail "still mounted after imgfs umount"

log "after umount"
check_clean "$SRC/good.qcow2"
out=$(qemu-img compare -f qcow2 -F raw "$SRC/good.qcow2" "$EXP/good.raw" 2>&1) || fail "good.qcow2: $out"
echo "   good.qcow2: $out"
(cd "$SRC" && sha256sum -- *) > "$T/sums.after"
if ! diff <(grep -v ' good.qcow2$' "$T/sums.before") <(grep -v ' good.qcow2$' "$T/sums.after"); then
    fail "a broken or unused image was modified by the daemon"
fi
echo "   broken images untouched"

echo "PASS: corrupt_neighbour"
