#!/usr/bin/env bash
# The common VMware-to-Linux workflow, through a mount: make a vmdk with
# imgfs create, losetup its disk.raw, mkfs, mount, write files, unmount;
# copy the vmdk, write more into the copy, make a child of the copy, write
# into the child, commit the child into the copy; qemu-img check and the
# files' checksums at every step; then re-parent the child onto the first
# disk with imgfs rebase (qemu-img cannot) and read it without the middle
# disk. Skipped where loop devices or ext4
# mounts are not usable (probed on a plain file first).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img losetup mkfs.ext4 e2fsck mount umount sha256sum
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt EXT=$T/ext
mkdir -p "$SRC" "$MNT" "$EXT"
add_cleanup detach_loop

probe_loop_ext4

# with_fs IMAGE CMD: mount IMAGE's disk.raw as ext4 on $EXT, run CMD, detach
with_fs() {
    local img=$1
    shift
    LOOP=$(losetup --find --show "$MNT/$img/disk.raw") || { LOOP=""; fail "losetup on $img failed"; }
    mount -t ext4 "$LOOP" "$EXT" || fail "mounting ext4 of $img failed"
    "$@"
    umount "$EXT" || fail "umount of $img's ext4 failed"
    e2fsck -fn "$LOOP" >/dev/null 2>&1 || fail "e2fsck of $img after use"
    losetup -d "$LOOP"
    LOOP=""
}
sums() { (cd "$EXT" && find . -type f -print0 | sort -z | xargs -0 sha256sum); }
check() { out=$(qemu-img check "$SRC/$1" 2>&1) || fail "qemu-img check $1: $out"; }

log "a new vmdk: mkfs, files"
"$IMGFS" create -q -f vmdk "$SRC/disk-a.vmdk" 256M
mount_imgfs "$SRC" "$MNT"
LOOP=$(losetup --find --show "$MNT/disk-a.vmdk/disk.raw") || fail "losetup"
mkfs.ext4 -q -F -E nodiscard "$LOOP" || fail "mkfs.ext4"
losetup -d "$LOOP"
LOOP=""
write_a() {
    mkdir -p "$EXT/etc"
    head -c $((5 * 1024 * 1024)) /dev/urandom >"$EXT/big"
    for i in $(seq 1 50); do head -c $((i * 101)) /dev/urandom >"$EXT/etc/f$i"; done
    sums >"$T/a.sums"
}
with_fs disk-a.vmdk write_a
umount_imgfs "$MNT"
check disk-a.vmdk
echo "   disk-a.vmdk: ext4 with $(wc -l <"$T/a.sums") files, qemu-img check clean"

log "a copy, written further; a child of the copy, written; the child committed"
cp --sparse=always "$SRC/disk-a.vmdk" "$SRC/disk-b.vmdk"
mount_imgfs "$SRC" "$MNT"
write_b() {
    sums | cmp -s - "$T/a.sums" || fail "disk-b.vmdk does not hold disk-a's files"
    head -c $((2 * 1024 * 1024)) /dev/urandom >"$EXT/added-in-b"
    sums >"$T/b.sums"
}
with_fs disk-b.vmdk write_b
umount_imgfs "$MNT"
check disk-b.vmdk
"$IMGFS" create -q -f vmdk -b disk-b.vmdk -F vmdk "$SRC/disk-c.vmdk"
mount_imgfs "$SRC" "$MNT"
r=$(write_errno "$MNT/disk-b.vmdk/disk.raw")
[[ $r == EROFS ]] || fail "disk-b.vmdk, the parent of disk-c.vmdk, took a write ($r)"
write_c() {
    sums | cmp -s - "$T/b.sums" || fail "disk-c.vmdk does not show its parent's files"
    rm "$EXT/etc/f7"
    head -c 777777 /dev/urandom >"$EXT/etc/only-in-c"
    sums >"$T/c.sums"
}
with_fs disk-c.vmdk write_c
echo "commit" >"$MNT/disk-c.vmdk/ctl"
for i in $(seq 1 100); do grep -q "^current: idle" "$MNT/disk-c.vmdk/ctl" && break; sleep 0.1; done
grep -q "^last: commit: ok" "$MNT/disk-c.vmdk/ctl" || fail "commit through ctl: $(cat "$MNT/disk-c.vmdk/ctl")"
umount_imgfs "$MNT"
for f in disk-a disk-b disk-c; do check "$f.vmdk"; done
"$IMGFS" info "$SRC/disk-c.vmdk" 2>&1 >/dev/null | grep -q . && fail "a parentCID mismatch after the commit"
mount_imgfs "$SRC" "$MNT"
verify() { sums | cmp -s - "$1" || fail "$2 does not hold the files it should"; }
with_fs disk-b.vmdk verify "$T/c.sums" disk-b.vmdk
with_fs disk-a.vmdk verify "$T/a.sums" disk-a.vmdk
umount_imgfs "$MNT"
echo "   disk-b.vmdk holds disk-c's files after the commit; disk-a.vmdk is unchanged; all checks clean"

log "the child re-parented onto disk-a.vmdk (imgfs rebase), disk-b.vmdk moved away"
"$IMGFS" rebase -q -f vmdk -b disk-a.vmdk -F vmdk "$SRC/disk-c.vmdk" || fail "imgfs rebase of disk-c.vmdk"
mkdir -p "$T/away"
mv "$SRC/disk-b.vmdk" "$T/away/"
for f in disk-a disk-c; do check "$f.vmdk"; done
qemu-img info "$SRC/disk-c.vmdk" | grep -q '^backing file: disk-a.vmdk ' ||
    fail "disk-c.vmdk's parent after the rebase: $(qemu-img info "$SRC/disk-c.vmdk" | grep backing)"
mount_imgfs "$SRC" "$MNT"
with_fs disk-c.vmdk verify "$T/c.sums" disk-c.vmdk
umount_imgfs "$MNT"
"$IMGFS" info "$SRC/disk-c.vmdk" 2>&1 >/dev/null | grep -q . && fail "a parentCID mismatch after the rebase"
echo "   disk-c.vmdk on disk-a.vmdk holds its files; checks clean"
echo "PASS: vmdk_workflow"
