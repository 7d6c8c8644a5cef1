#!/usr/bin/env bash
# partitions/pN.raw: one view per partition of the guest disk, MBR (primary
# and logical) and GPT, at the offsets sfdisk reports; readable, writable
# (a file system made and loop-mounted on p2.raw with no offset
# arithmetic), with SEEK_DATA/SEEK_HOLE; the list follows the table when
# it is rewritten through disk.raw.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io sfdisk mkfs.ext4 e2fsck cmp
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt EXT=$T/ext
mkdir -p "$SRC" "$MNT" "$EXT"
M=$((1024 * 1024))
LOOPED=""
cleanup_ext() { if [[ -n $LOOPED ]]; then umount "$EXT" 2>/dev/null || umount -l "$EXT" || true; LOOPED=""; fi; }
add_cleanup cleanup_ext

# expected_parts RAW: "N OFFSET LENGTH" per partition, from sfdisk --json
expected_parts() {
    sfdisk --json "$1" | "$PY" -c '
import json, re, sys
t = json.load(sys.stdin)["partitiontable"]
ss = t.get("sectorsize", 512)
for p in t["partitions"]:
    if t["label"] == "dos" and p["type"] in ("5", "f", "85"):
        continue  # the extended container is no partition view (as Linux shows it: 1 KiB)
    n = int(re.search(r"(\d+)$", p["node"]).group(1))
    print(n, p["start"] * ss, p["size"] * ss)' | sort -n
}
# view_matches DISK PART OFFSET LENGTH: PART reads as DISK's bytes there
view_matches() {
    cmp -s <(dd if="$1" bs=64K iflag=skip_bytes,count_bytes skip="$3" count="$4" status=none) "$2"
}

log "an MBR disk: two primaries and two logical partitions, with data"
truncate -s 64M "$T/mbr.raw"
sfdisk -q "$T/mbr.raw" <<'TABLE'
label: dos
start=2048, size=16384, type=83
start=18432, size=32768, type=83
start=51200, size=79872, type=5
start=53248, size=16384, type=83
start=71680, size=57344, type=82
TABLE
head -c $((4 * M)) /dev/urandom | dd of="$T/mbr.raw" bs=64K seek=$((2048 * 512 + 1 * M)) oflag=seek_bytes conv=notrunc status=none
qemu-img convert -f raw -O qcow2 "$T/mbr.raw" "$SRC/mbr.qcow2"

log "a GPT disk: three partitions"
truncate -s 48M "$T/gpt.raw"
sfdisk -q "$T/gpt.raw" <<'TABLE'
label: gpt
start=2048, size=8192, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
start=10240, size=20480, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
start=40960, size=16384, type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F
TABLE
qemu-img convert -f raw -O qcow2 "$T/gpt.raw" "$SRC/gpt.qcow2"
qemu-img create -q -f qcow2 "$SRC/blank.qcow2" 8M

mount_imgfs "$SRC" "$MNT"
for d in mbr gpt; do
    want=$(expected_parts "$T/$d.raw")
    got=""
    while read -r n off len; do
        f=$MNT/$d.qcow2/partitions/p$n.raw
        [[ -f $f ]] || fail "$d: p$n.raw missing (partitions/: $(ls "$MNT/$d.qcow2/partitions"))"
        [[ $(stat -c %s "$f") == "$len" ]] || fail "$d: p$n.raw is $(stat -c %s "$f") bytes, sfdisk says $len"
        view_matches "$MNT/$d.qcow2/disk.raw" "$f" "$off" "$len" || fail "$d: p$n.raw does not read as disk.raw at $off"
        got+="$n "
    done <<<"$want"
    [[ $(ls "$MNT/$d.qcow2/partitions" | wc -l) == $(wc -l <<<"$want") ]] ||
        fail "$d: partitions/ holds $(ls "$MNT/$d.qcow2/partitions"), expected p$got"
    echo "   $d: $(ls "$MNT/$d.qcow2/partitions" | tr '\n' ' ')"
done
[[ -z $(ls "$MNT/blank.qcow2/partitions") ]] || fail "a disk without a table shows partitions"

log "SEEK_DATA/SEEK_HOLE on a partition view follow the disk's map"
"$PY" - "$MNT/mbr.qcow2/partitions/p1.raw" <<'PY' || fail "SEEK_DATA/SEEK_HOLE on p1.raw"
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
d = os.lseek(fd, 0, os.SEEK_DATA)
h = os.lseek(fd, d, os.SEEK_HOLE)
# the 4 MiB of data start 1 MiB into p1 (sfdisk wrote its tables elsewhere)
assert d == 1 << 20, d
assert h == 5 << 20, h
PY
echo "   data at 1 MiB..5 MiB of p1.raw, as written"

log "mkfs.ext4 on partitions/p2.raw, loop-mounted with no offset"
mkfs.ext4 -q -F -E nodiscard "$MNT/mbr.qcow2/partitions/p2.raw" || fail "mkfs.ext4 on p2.raw"
if mount -o loop "$MNT/mbr.qcow2/partitions/p2.raw" "$EXT" 2>"$T/err"; then
    LOOPED=1
    head -c $((3 * M)) /dev/urandom > "$EXT/file"
    sha=$(sha256sum < "$EXT/file")
    umount "$EXT"; LOOPED=""
    e2fsck -fn "$MNT/mbr.qcow2/partitions/p2.raw" >/dev/null || fail "e2fsck on p2.raw"
    echo "   wrote a file through a loop mount of p2.raw"
else
    grep -qi "loop" "$T/err" && skip "loop mounts are not usable here: $(cat "$T/err")"
    fail "mount -o loop p2.raw: $(cat "$T/err")"
fi
view_matches "$MNT/mbr.qcow2/disk.raw" "$MNT/mbr.qcow2/partitions/p2.raw" $((18432 * 512)) $((32768 * 512)) ||
    fail "disk.raw does not show what was written through p2.raw"
r=$(write_errno "$MNT/mbr.qcow2/layers/0-mbr.qcow2.raw")
[[ $r == EROFS ]] || fail "layer views stay read-only ($r)"

log "writes to a logical MBR partition and a GPT partition land at their offsets; the end is a wall"
head -c $M /dev/urandom > "$T/w5"
dd if="$T/w5" of="$MNT/mbr.qcow2/partitions/p5.raw" bs=64K seek=$((512 * 1024)) oflag=seek_bytes conv=notrunc status=none ||
    fail "write to p5.raw (logical)"
view_matches "$MNT/mbr.qcow2/disk.raw" "$T/w5" $((53248 * 512 + 512 * 1024)) $M ||
    fail "disk.raw does not show what was written through p5.raw at its offset"
p6_before=$(sha256sum < "$MNT/mbr.qcow2/partitions/p6.raw")
# 8 KiB at 4 KiB before p5's end: 4 KiB land, the rest is refused
"$PY" - "$MNT/mbr.qcow2/partitions/p5.raw" $((16384 * 512)) <<'PY' || fail "the end of p5.raw is not a wall"
import errno, os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
end = int(sys.argv[2])
n = os.pwrite(fd, b"\xee" * 8192, end - 4096)
assert n == 4096, n
try:
    os.pwrite(fd, b"\xee" * 512, end)
    raise SystemExit("a write past the end of the partition succeeded")
except OSError as e:
    assert e.errno == errno.ENOSPC, e
PY
[[ $(sha256sum < "$MNT/mbr.qcow2/partitions/p6.raw") == "$p6_before" ]] || fail "a write at p5's end reached p6"
head -c $((2 * M)) /dev/urandom > "$T/g3"
dd if="$T/g3" of="$MNT/gpt.qcow2/partitions/p3.raw" bs=1M conv=notrunc,fsync status=none || fail "write to gpt p3.raw"
echo "   p5 (logical) and GPT p3 written; 4 KiB of 8 land at p5's end, past it ENOSPC, p6 untouched"

log "the list follows the table"
sfdisk -q --delete "$MNT/mbr.qcow2/disk.raw" 1 2>/dev/null || sfdisk -q --delete "$MNT/mbr.qcow2/disk.raw" 1
sleep 1.1  # the kernel may cache the old names for the entry timeout
[[ ! -e $MNT/mbr.qcow2/partitions/p1.raw ]] || fail "p1.raw still there after deleting partition 1"
[[ -f $MNT/mbr.qcow2/partitions/p2.raw ]] || fail "p2.raw gone after deleting partition 1"
echo "   p1 deleted through disk.raw: partitions/ now $(ls "$MNT/mbr.qcow2/partitions" | tr '\n' ' ')"

umount_imgfs "$MNT"
check_clean "$SRC/mbr.qcow2"
check_clean "$SRC/gpt.qcow2"
to_raw "$SRC/gpt.qcow2" "$T/gpt.after"
view_matches "$T/gpt.after" "$T/g3" $((40960 * 512)) $((2 * M)) || fail "qemu does not read GPT p3's new data at its offset"
to_raw "$SRC/mbr.qcow2" "$T/after.raw"
dd if="$T/after.raw" of="$T/p2.img" bs=512 skip=18432 count=32768 status=none
e2fsck -fn "$T/p2.img" >/dev/null || fail "qemu's view of partition 2 is not a clean ext4"
view_matches "$T/after.raw" "$T/w5" $((53248 * 512 + 512 * 1024)) $M || fail "qemu does not read p5's new data at its offset"
[[ $(dd if="$T/after.raw" bs=512 skip=$((53248 + 16384 - 8)) count=8 status=none | tr -d '\356' | wc -c) == 0 ]] ||
    fail "qemu does not read the 4 KiB written at p5's end"
echo "PASS: partitions"
