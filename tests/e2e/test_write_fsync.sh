#!/usr/bin/env bash
# Writes through the mount:
#  - dd conv=notrunc at unaligned offsets: partial clusters of an overlay
#    (copy-on-write must merge the backing data), cluster/page straddling,
#    first/last byte, zeros over backing data, overwrites of new data;
#    on a qcow2 overlay, a standalone qcow2 (4 KiB clusters) and a raw file
#  - content visible through the mount right away
#  - after fsync (while still mounted) the image FILES already hold the data:
#    qemu-img compare -U against the expected raw
#  - O_TRUNC never shrinks; truncate to a smaller size fails with EPERM
#  - after imgfs umount: qemu-img check clean, qemu-img compare identical,
#    backing file untouched, remount shows the same content
# Expected content = qemu-img convert -O raw of the original image with the
# same dd writes applied.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io dd cmp truncate
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt EXP=$T/exp
mkdir -p "$SRC" "$MNT" "$EXP"
M=$((1024 * 1024)) K=1024
PAT=$T/pattern
head -c $((2 * M)) /dev/urandom > "$PAT"

log "creating images"
qio() { qemu-io -f qcow2 "${@:2}" "$1" >/dev/null || fail "qemu-io on $1 failed"; }
(
    cd "$SRC"
    qemu-img create -q -f qcow2 -o cluster_size=65536 base.qcow2 16M
    qio base.qcow2 -c "write -P 0x11 0 $((3 * M))" -c "write -P 0x22 $((5 * M + 7)) $((1 * M))" \
        -c "write -P 0x23 $((16 * M - 65536)) 65536"
    qemu-img create -q -f qcow2 -o cluster_size=65536 -b base.qcow2 -F qcow2 overlay.qcow2
    qio overlay.qcow2 -c "write -P 0x33 $((9 * M)) 65536"
    qemu-img create -q -f qcow2 -o cluster_size=4096 solo.qcow2 16M
    qio solo.qcow2 -c "write -P 0x44 $((1 * M + 5)) 300000"
    truncate -s 16M data.img
    head -c $((1 * M)) /dev/urandom | dd of=data.img bs=64K seek=$((2 * M)) oflag=seek_bytes conv=notrunc status=none
)
IMGS=(overlay.qcow2 solo.qcow2 data.img)
for img in "${IMGS[@]}" base.qcow2; do to_raw "$SRC/$img" "$EXP/$img.raw"; done
cp "$EXP/base.qcow2.raw" "$T/base.before.raw"
VSIZE=$((16 * M))

# "dst_off len src_off" (src = $PAT, or /dev/zero when src_off is "zero")
WRITES=(
    "$((64 * K + 100)) 1000 0"                # inside one backing cluster: COW merge
    "$((2 * M - 10)) 20 1000"                 # straddles two backing clusters
    "$((3 * M - 5)) 10 2000"                  # end of backing data / hole
    "$((5 * M)) 1 3000"                       # one byte in a hole
    "$((6 * M + 333)) 1500000 4000"           # large, unaligned, over data and holes
    "$((16 * M - 1)) 1 5000"                  # last byte
    "0 1 6000"                                # first byte
    "$((9 * M + 4095)) 2 7000"                # straddles a page, in an overlay cluster
    "$((64 * K + 500)) 300 8000"              # overwrite part of the first write
    "$((1 * M + 3)) 70000 zero"               # zeros over backing data
    "$((12 * M + 4096)) 4096 9000"            # aligned page in a hole
    "$((16 * M - 65536 + 10)) 65000 10000"    # last cluster, over backing data
)

apply_writes() { # FILE [dd conv extra]
    local w off len soff n=0
    for w in "${WRITES[@]}"; do
        read -r off len soff <<< "$w"
        n=$((n + 1))
        if [[ $soff == zero ]]; then
            write_at /dev/zero 0 "$1" "$off" "$len" "${2:-}" || return 1
        else
            write_at "$PAT" "$soff" "$1" "$off" "$len" "${2:-}" || return 1
        fi
    done
}

for img in "${IMGS[@]}"; do apply_writes "$EXP/$img.raw"; done
for img in "${IMGS[@]}"; do assert_size "$EXP/$img.raw" $VSIZE "expected $img"; done

mount_imgfs "$SRC" "$MNT"

log "writing through the mount"
for img in "${IMGS[@]}"; do
    f=$MNT/$img/disk.raw
    # every other image gets conv=fsync on each dd
    if [[ $img == solo.qcow2 ]]; then apply_writes "$f" fsync; else apply_writes "$f"; fi ||
        fail "dd into $img/disk.raw failed"
    assert_size "$f" $VSIZE "$img/disk.raw after writes"
    assert_same "$f" "$EXP/$img.raw" "$img/disk.raw read back before fsync"
done

log "fsync, then the image files hold the data (compared while still mounted)"
for img in "${IMGS[@]}"; do
    "$PY" -c 'import os,sys; fd=os.open(sys.argv[1], os.O_RDWR); os.fsync(fd); os.close(fd)' "$MNT/$img/disk.raw" ||
        fail "fsync $img/disk.raw failed"
done
for img in "${IMGS[@]}"; do
    fmt=qcow2; [[ $img == *.img ]] && fmt=raw
    out=$(qemu-img compare -U -f "$fmt" -F raw "$SRC/$img" "$EXP/$img.raw" 2>&1) ||
        fail "after fsync, $img on disk differs from what was written: $out"
    echo "   $img: $out"
done

log "O_TRUNC does not shrink"
f=$MNT/overlay.qcow2/disk.raw
if (: > "$f") 2>/dev/null; then echo "   ': > disk.raw' succeeded"; else echo "   ': > disk.raw' refused"; fi
assert_size "$f" $VSIZE "disk.raw after O_TRUNC open"
assert_same "$f" "$EXP/overlay.qcow2.raw" "content after O_TRUNC open"
# dd without conv=notrunc opens with O_TRUNC, then writes at offset 0
if dd if="$PAT" of="$f" bs=4096 count=1 skip=100 status=none 2>/dev/null; then
    echo "   dd without notrunc succeeded"
    write_at "$PAT" $((100 * 4096)) "$EXP/overlay.qcow2.raw" 0 4096
else
    echo "   dd without notrunc refused"
fi
assert_size "$f" $VSIZE "disk.raw after dd without notrunc"
assert_same "$f" "$EXP/overlay.qcow2.raw" "content after dd without notrunc"

log "truncate to a smaller size fails with EPERM"
for img in overlay.qcow2 data.img; do
    f=$MNT/$img/disk.raw
    if truncate -s $((VSIZE - 4096)) "$f" 2>/dev/null; then fail "truncate -s smaller on $img/disk.raw succeeded"; fi
    e=$("$PY" -c '
import errno, os, sys
try:
    os.truncate(sys.argv[1], int(sys.argv[2])); print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))' "$f" 1000)
    [[ $e == EPERM ]] || fail "truncate($img/disk.raw, 1000): $e, expected EPERM"
    assert_size "$f" $VSIZE "$img/disk.raw after failed truncates"
    assert_same "$f" "$EXP/$img.raw" "$img content after failed truncates"
done

sync "$MNT/overlay.qcow2/disk.raw"
umount_imgfs "$MNT"
! mountpoint -q "$MNT" || fail "still mounted after imgfs umount"

log "after umount: qemu-img check and compare"
for img in overlay.qcow2 solo.qcow2 base.qcow2; do check_clean "$SRC/$img"; done
for img in "${IMGS[@]}"; do
    fmt=qcow2; [[ $img == *.img ]] && fmt=raw
    out=$(qemu-img compare -f "$fmt" -F raw "$SRC/$img" "$EXP/$img.raw" 2>&1) ||
        fail "$img differs from expected after umount: $out"
    echo "   $img: $out"
done
assert_same "$SRC/data.img" "$EXP/data.img.raw" "data.img file"
to_raw "$SRC/base.qcow2" "$T/base.after.raw"
assert_same "$T/base.after.raw" "$T/base.before.raw" "backing file base.qcow2 untouched"

log "remount read-only: same content"
mount_imgfs "$SRC" "$MNT" -r
for img in "${IMGS[@]}"; do assert_same "$MNT/$img/disk.raw" "$EXP/$img.raw" "$img/disk.raw after remount"; done
umount_imgfs "$MNT"

echo "PASS: write_fsync"
