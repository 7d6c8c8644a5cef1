#!/usr/bin/env bash
# A real filesystem on top of disk.raw: loop device on the FUSE file, mkfs.ext4,
# write files, unmount everything (incl. imgfs), remount, verify checksums,
# grow the disk with truncate and the mounted ext4 with resize2fs,
# then e2fsck -fn is clean (through the mount and on qemu's raw conversion)
# and qemu-img check is clean.  Skipped when loop devices / ext4 mounts are
# not usable on this machine (probed on a plain file first, so a failure on
# imgfs is a real failure).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img losetup mkfs.ext4 e2fsck resize2fs blockdev mount umount sha256sum truncate
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt EXT=$T/ext
mkdir -p "$SRC" "$MNT" "$EXT"
# runs before lib.sh's cleanup (which unmounts imgfs and removes $T)
add_cleanup detach_loop

log "probing loop device + ext4 support on a plain file"
probe_loop_ext4

attach() { # disk.raw -> $LOOP
    LOOP=$(losetup --find --show "$1") || { LOOP=""; fail "losetup on $1 failed"; }
    echo "   $1 -> $LOOP"
}

qemu-img create -q -f qcow2 "$SRC/vm.qcow2" 256M
mount_imgfs "$SRC" "$MNT"
DISK=$MNT/vm.qcow2/disk.raw

log "mkfs.ext4 on a loop device over disk.raw"
attach "$DISK"
mkfs.ext4 -q -F -E nodiscard -L imgfs-e2e "$LOOP" || fail "mkfs.ext4 on $LOOP failed"
mount -t ext4 "$LOOP" "$EXT" || fail "mounting the fresh ext4 failed"

log "writing files"
mkdir -p "$EXT/dir/sub"
head -c $((8 * 1024 * 1024)) /dev/urandom > "$EXT/big1"
head -c $((3 * 1024 * 1024 + 12345)) /dev/urandom > "$EXT/dir/big2"
for i in $(seq 1 200); do head -c $((i * 37)) /dev/urandom > "$EXT/dir/sub/small$i"; done
dd if=/dev/urandom of="$EXT/sparse" bs=4096 count=3 seek=5000 status=none
ln -s dir/big2 "$EXT/link"
(cd "$EXT" && find . -type f -print0 | sort -z | xargs -0 sha256sum) > "$T/sums"
echo "   $(wc -l < "$T/sums") files"
sync
umount "$EXT"
losetup -d "$LOOP"; LOOP=""
umount_imgfs "$MNT"
! mountpoint -q "$MNT" || fail "imgfs still mounted after umount"
check_clean "$SRC/vm.qcow2"

log "remount, verify checksums"
mount_imgfs "$SRC" "$MNT"
attach "$DISK"
mount -t ext4 "$LOOP" "$EXT" || fail "mounting ext4 after imgfs remount failed"
(cd "$EXT" && sha256sum --quiet -c "$T/sums") || fail "checksums differ after remount"
[[ $(readlink "$EXT/link") == dir/big2 ]] || fail "symlink lost"
# modify a bit more on the second mount
rm -f "$EXT"/dir/sub/small1*
head -c 500000 /dev/urandom > "$EXT/after-remount"
(cd "$EXT" && sha256sum ./after-remount) > "$T/sum2"
umount "$EXT"
losetup -d "$LOOP"; LOOP=""

# Offline: the kernel here refuses on-line ext4 growth even on a plain
# file ("Permission denied to resize filesystem"), so the file system is
# unmounted while it grows; the loop device stays attached to disk.raw.
log "grow the disk: truncate, losetup -c, resize2fs"
attach "$DISK"
mount -t ext4 "$LOOP" "$EXT" || fail "mounting ext4 for the grow failed"
before=$(df -B1 --output=size "$EXT" | tail -1)
umount "$EXT"
truncate -s 384M "$DISK" || fail "truncate -s 384M on disk.raw failed"
[[ $(stat -c %s "$DISK") == $((384 * 1024 * 1024)) ]] || fail "disk.raw did not grow: $(stat -c %s "$DISK")"
losetup -c "$LOOP" || fail "losetup -c $LOOP failed"
[[ $(blockdev --getsize64 "$LOOP") == $((384 * 1024 * 1024)) ]] || fail "loop device did not grow: $(blockdev --getsize64 "$LOOP")"
e2fsck -fp "$LOOP" >/dev/null || fail "e2fsck before resize2fs found problems"
resize2fs "$LOOP" >/dev/null 2>&1 || fail "resize2fs on the grown disk failed"
mount -t ext4 "$LOOP" "$EXT" || fail "mounting the grown ext4 failed"
after=$(df -B1 --output=size "$EXT" | tail -1)
(( after > before + 100 * 1024 * 1024 )) || fail "ext4 did not grow: $before -> $after bytes"
head -c $((120 * 1024 * 1024)) /dev/zero | tr '\0' 'x' > "$EXT/needs-the-new-space"
(cd "$EXT" && sha256sum ./needs-the-new-space) >> "$T/sum2"
(cd "$EXT" && sha256sum --quiet -c "$T/sum2") || fail "files differ after the grow"
echo "   ext4 grew from $before to $after bytes"
umount "$EXT"
losetup -d "$LOOP"; LOOP=""

log "e2fsck -fn through the mount"
e2fsck -fn "$DISK" || fail "e2fsck found problems (through imgfs)"
umount_imgfs "$MNT"

log "qemu-img check, e2fsck on qemu's view"
check_clean "$SRC/vm.qcow2"
to_raw "$SRC/vm.qcow2" "$T/vm.raw"
e2fsck -fn "$T/vm.raw" || fail "e2fsck found problems in qemu-img convert output"
# and the last file is readable from qemu's view too
attach "$T/vm.raw"
mount -t ext4 -o ro "$LOOP" "$EXT" || fail "mounting qemu's raw conversion failed"
(cd "$EXT" && sha256sum --quiet -c "$T/sum2") || fail "files written after the remount differ in qemu's view"
(cd "$EXT" && grep -v './dir/sub/small1' "$T/sums" | sha256sum --quiet -c -) || fail "files differ in qemu's view"
detach_loop

echo "PASS: ext4_loop"
