#!/usr/bin/env bash
# The mount follows SOURCE live (inotify): images created, copied in,
# renamed or deleted there appear and disappear; a removed image that is
# still open stays readable through that handle until it is closed; an
# overlay that appears makes its backing image read-only. Mounted with
# -o claim=write, so that programs may write images in SOURCE that the
# mount has not written (qemu-io below), and the mount follows them.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io getfattr cmp
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
M=$((1024 * 1024))

# A file rewritten by several closes (qemu-img create, then qemu-io) is
# listed at the first; the mount catches up with each close as the watcher
# reads it, so what it shows settles within moments, never stays stale.
same_as() { cmp -s "$1" "$2"; }
listed() { [[ -d $MNT/$1 ]] && ls "$MNT" | grep -qx -- "$1"; }
unlisted() { ! ls "$MNT" | grep -qx -- "$1" && [[ ! -e $MNT/$1 ]]; }

qemu-img create -q -f qcow2 "$SRC/a.qcow2" 8M
qemu-io -f qcow2 -c "write -P 0x61 0 8M" "$SRC/a.qcow2" >/dev/null
mount_imgfs "$SRC" "$MNT" --log "$T/log" -o claim=write
listed a.qcow2 || fail "a.qcow2 not listed at mount"

log "created and copied in"
qemu-img create -q -f qcow2 "$SRC/b.qcow2" 4M
qemu-io -f qcow2 -c "write -P 0x62 0 1M" "$SRC/b.qcow2" >/dev/null
wait_for listed b.qcow2 || fail "b.qcow2 did not appear"
to_raw "$SRC/b.qcow2" "$T/b.raw"
wait_for same_as "$MNT/b.qcow2/disk.raw" "$T/b.raw" ||
    assert_same "$MNT/b.qcow2/disk.raw" "$T/b.raw" "b.qcow2/disk.raw"
head -c $((2 * M)) /dev/urandom > "$T/c.img"
cp "$T/c.img" "$SRC/c.img"
wait_for listed c.img || fail "c.img (copied in) did not appear"
assert_same "$MNT/c.img/disk.raw" "$T/c.img" "c.img/disk.raw"
echo "not an image" > "$SRC/notes.txt"
"$IMGFS" create -f qcow2 "$SRC/d.qcow2" 1M >/dev/null   # written aside, renamed in
wait_for listed d.qcow2 || fail "d.qcow2 (imgfs create) did not appear"
sleep 0.3
unlisted notes.txt || fail "notes.txt is listed"
echo "   qemu-img create, cp and imgfs create appear; other files do not"

log "images made in a burst settle at their final size"
# qemu-img create closes the file several times, the header first saying
# size 0: whatever the watcher read in between, the last close wins.
for n in $(seq 1 12); do
    qemu-img create -q -f qcow2 "$SRC/burst$n.qcow2" $((n * M))
    qemu-io -f qcow2 -c "write -P $n 0 64k" "$SRC/burst$n.qcow2" >/dev/null
done
for n in $(seq 1 12); do
    wait_for listed "burst$n.qcow2" || fail "burst$n.qcow2 did not appear"
    settled() {
        [[ $(stat -c %s "$MNT/burst$n.qcow2/disk.raw") == $((n * M)) &&
           $(head -c 1 "$MNT/burst$n.qcow2/disk.raw" | od -An -tu1 | tr -d ' ') == "$n" ]]
    }
    wait_for settled || fail "burst$n.qcow2/disk.raw: size $(stat -c %s "$MNT/burst$n.qcow2/disk.raw") (want $((n * M))), first byte $(head -c 1 "$MNT/burst$n.qcow2/disk.raw" | od -An -tu1) (want $n)"
    rm "$SRC/burst$n.qcow2"
done
echo "   12 images made back to back: each at its size, with its data"

log "deleted: gone from the tree, still readable through an open handle"
exec {held}<"$MNT/b.qcow2/disk.raw"
rm "$SRC/b.qcow2"
wait_for unlisted b.qcow2 || fail "b.qcow2 still listed after rm"
# nothing of it may come from the page cache: the daemon must serve it
if [[ -w /proc/sys/vm/drop_caches ]]; then sync; echo 3 > /proc/sys/vm/drop_caches
else echo "   (not root: cannot drop the page cache; the read below may come from it)"; fi
cmp -s - "$T/b.raw" <&$held || fail "an open handle of a removed image does not read its content"
exec {held}<&-
echo "   b.qcow2 gone; the open handle read all of it"

log "renamed"
to_raw "$SRC/a.qcow2" "$T/a.raw"
mv "$SRC/a.qcow2" "$SRC/renamed.qcow2"
wait_for unlisted a.qcow2 || fail "a.qcow2 still listed after mv"
wait_for listed renamed.qcow2 || fail "renamed.qcow2 did not appear"
assert_same "$MNT/renamed.qcow2/disk.raw" "$T/a.raw" "renamed.qcow2/disk.raw"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/renamed.qcow2/disk.raw") == 0 ]] ||
    fail "renamed.qcow2 is read-only: $(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/renamed.qcow2/disk.raw")"
echo "   a.qcow2 -> renamed.qcow2, writable"

log "an overlay appears: its backing image becomes read-only"
qemu-img create -q -f qcow2 -b renamed.qcow2 -F qcow2 "$SRC/top.qcow2"
wait_for listed top.qcow2 || fail "top.qcow2 did not appear"
ro=$(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/renamed.qcow2/disk.raw")
[[ $ro == "1: it is the backing file of top.qcow2" ]] || fail "renamed.qcow2 read_only: $ro"
assert_same "$MNT/top.qcow2/disk.raw" "$T/a.raw" "top.qcow2/disk.raw"
r=$(write_errno "$MNT/renamed.qcow2/disk.raw")
[[ $r == EROFS ]] || fail "writing the new overlay's backing image gave $r"
echo "   $ro"

umount_imgfs "$MNT"
for f in renamed top c d; do
    [[ -e $SRC/$f.qcow2 ]] && check_clean "$SRC/$f.qcow2"
done
echo "PASS: live_dir"
