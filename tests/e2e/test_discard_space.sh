#!/usr/bin/env bash
# A discard gives the image file's space back to the host:
#  - a guest's fstrim: ext4 on a loop device over a mounted qcow2's disk.raw,
#    a 200 MiB file written and deleted, fstrim; the image file's du and
#    user.imgfs.allocated drop by at least 190 MiB at once (no unmount, no
#    fsync), a new file reuses the space, and qemu-img check is clean;
#  - fallocate --punch-hole of 150 MiB on qcow2, vmdk and vhdx: du drops by
#    at least 140 MiB, qemu-img check is clean and qemu reads the model.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img qemu-io getfattr fallocate losetup mkfs.ext4 fstrim mount umount
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt EXT=$T/ext
mkdir -p "$SRC" "$MNT" "$EXT"
M=$((1024 * 1024))
du_bytes() { echo $(( $(stat -c %b "$1") * 512 )); }
attr_allocated() { getfattr --absolute-names --only-values -n user.imgfs.allocated "$1"; }

add_cleanup detach_loop

log "fallocate --punch-hole of 150 MiB on each format"
head -c $((200 * M)) /dev/urandom > "$T/data"
for fmt in qcow2 vmdk vhdx; do
    qemu-img create -q -f $fmt "$SRC/p.$fmt" 256M
done
mount_imgfs "$SRC" "$MNT" --log "$T/log"
for fmt in qcow2 vmdk vhdx; do
    D=$MNT/p.$fmt/disk.raw
    dd if="$T/data" of="$D" bs=1M conv=notrunc,fsync status=none
    before=$(du_bytes "$SRC/p.$fmt")
    fallocate --punch-hole -o 0 -l 150M "$D"
    after=$(du_bytes "$SRC/p.$fmt")
    echo "   $fmt: du $((before / M)) MiB -> $((after / M)) MiB"
    (( before - after >= 140 * M )) || fail "$fmt: a 150 MiB punch freed only $(( (before - after) / M )) MiB of the image file"
done
umount_imgfs "$MNT"
cp "$T/data" "$T/model"
truncate -s 256M "$T/model"
dd if=/dev/zero of="$T/model" bs=1M count=150 conv=notrunc status=none
for fmt in qcow2 vmdk vhdx; do
    check_clean "$SRC/p.$fmt"
    qemu-img compare -q -f $fmt -F raw "$SRC/p.$fmt" "$T/model" || fail "$fmt: qemu does not read the model after the punch"
done
echo "   all clean; qemu reads the model"

log "fstrim of ext4 on a loop device over disk.raw"
probe_loop_ext4
qemu-img create -q -f qcow2 "$SRC/vm.qcow2" 512M
mount_imgfs "$SRC" "$MNT" --log "$T/log"
DISK=$MNT/vm.qcow2/disk.raw
LOOP=$(losetup --find --show "$DISK") || { LOOP=""; fail "losetup on $DISK failed"; }
mkfs.ext4 -q -F -E nodiscard "$LOOP" || fail "mkfs.ext4 on $LOOP failed"
mount -t ext4 "$LOOP" "$EXT" || fail "mounting the fresh ext4 failed"
cp "$T/data" "$EXT/big"
sync -f "$EXT/big"
sync "$DISK"
before=$(du_bytes "$SRC/vm.qcow2") attr_before=$(attr_allocated "$DISK")
rm "$EXT/big"
sync -f "$EXT"  # ext4 frees the blocks when its journal commits
trimmed=$(fstrim -v "$EXT")
echo "   $trimmed"
after=$(du_bytes "$SRC/vm.qcow2") attr_after=$(attr_allocated "$DISK")
echo "   du $((before / M)) -> $((after / M)) MiB; user.imgfs.allocated $attr_before -> $attr_after"
(( before - after >= 190 * M )) || fail "fstrim freed only $(( (before - after) / M )) MiB of the image file"
(( attr_before - attr_after >= 190 * M )) || fail "user.imgfs.allocated dropped by only $(( (attr_before - attr_after) / M )) MiB"

log "a new file reuses the space"
head -c $((100 * M)) /dev/urandom > "$T/new"
cp "$T/new" "$EXT/new"
sync -f "$EXT/new"
grown=$(du_bytes "$SRC/vm.qcow2")
echo "   du after 100 MiB more: $((grown / M)) MiB"
(( grown <= before )) || fail "the image file grew past its size before the trim ($grown > $before)"
umount "$EXT"
losetup -d "$LOOP"; LOOP=""
umount_imgfs "$MNT"
check_clean "$SRC/vm.qcow2"
qemu-img convert -O raw "$SRC/vm.qcow2" "$T/vm.raw"
LOOP=$(losetup --find --show -r "$T/vm.raw")
mount -o ro -t ext4 "$LOOP" "$EXT"
cmp "$T/new" "$EXT/new" || fail "the file written after the trim reads differently through qemu's conversion"
echo "   clean; the new file reads right through qemu"
echo "PASS"
