#!/usr/bin/env bash
# A root mount shared by many users gives no user more than their own files
# allow (README, "Access in a shared mount"):
#  - a file an image names (backing file, data file) is opened with the
#    rights of the image file's owner: an image of uid 65534 naming a
#    root-only file is left out, with the reason in the log;
#  - a symlink in SOURCE is served only where its owner can open the target;
#    a symlink on the way to a file an image names is followed only if root
#    or the image's owner owns it;
#  - a commit into a backing file the owner may not write fails, the file
#    unchanged;
#  - views never grant more than the files they read: a world-readable
#    overlay on a root-only backing file shows 0600 views, and uid 65534
#    gets EACCES on disk.raw, the layer views, info.json and the directory's
#    attributes, while root reads them;
#  - a user's own image (and its own backing file) stays readable and
#    writable for that user;
#  - an overlay pins its backing image read-only only where the overlay's
#    owner could write that image: uid 65534's overlays of root's image
#    (at mount, and made while mounted) are served read-only instead, and
#    root's image stays writable; uid 65534's overlay of its own image pins it.
# Runs as root only: it needs a root mount and a second user.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img qemu-io getfattr setfattr setpriv
need_fuse
[[ $(id -u) -eq 0 ]] || skip "needs root: the test is a root mount shared with uid 65534"
tmpdir
chmod 755 "$T"

U=65534
as_user() { (cd / && setpriv --reuid=$U --regid=$U --clear-groups "$@"); }
SRC=$T/src MNT=$T/mnt ROOTONLY=$T/rootonly
mkdir -p "$SRC" "$MNT" "$ROOTONLY"
chown "$U:$U" "$SRC"
chmod 700 "$ROOTONLY"
M=$((1024 * 1024))

# Root's secrets: a raw file and a qcow2 image, mode 0600.
head -c $M /dev/urandom > "$ROOTONLY/secret.raw"
chmod 600 "$ROOTONLY/secret.raw"
cp "$ROOTONLY/secret.raw" "$T/secret.orig"
# A root-only backing file in a directory uid 65534 may enter.
qemu-img create -q -f qcow2 "$T/base600.qcow2" 4M
qemu-io -f qcow2 -c "write -P 0x5a 0 1M" "$T/base600.qcow2" >/dev/null
chmod 600 "$T/base600.qcow2"
qemu-img convert -O raw "$T/base600.qcow2" "$T/base600.raw"
# A world-readable (not writable) backing file of root's, for the commit.
qemu-img create -q -f qcow2 "$T/base644.qcow2" 4M
qemu-io -f qcow2 -c "write -P 0x33 0 1M" "$T/base644.qcow2" >/dev/null
chmod 644 "$T/base644.qcow2"
sha_base644=$(sha256sum < "$T/base644.qcow2")

# uid 65534's images: each names something it cannot open, but one.
as_user qemu-img create -q -f qcow2 -u -b "$ROOTONLY/secret.raw" -F raw "$SRC/e.qcow2" 1M
as_user qemu-img create -q -f qcow2 -u -b "$T/base600.qcow2" -F qcow2 "$SRC/e2.qcow2" 4M
as_user qemu-img create -q -f qcow2 -o data_file="$SRC/own.data",data_file_raw=on "$SRC/d.qcow2" 1M
qemu-img amend -q -o data_file="$ROOTONLY/secret.raw" "$SRC/d.qcow2"
chown "$U:$U" "$SRC/d.qcow2"
as_user ln -s "$T/base600.qcow2" "$SRC/link.qcow2"
as_user qemu-img create -q -f qcow2 -b "$T/base644.qcow2" -F qcow2 "$SRC/c.qcow2"
as_user qemu-img create -q -f qcow2 "$SRC/mine.qcow2" 2M
chmod 600 "$SRC/mine.qcow2"
# Root's: a world-readable overlay on the root-only backing file, and a
# symlink of root's to the same root-only image.
qemu-img create -q -f qcow2 -b "$T/base600.qcow2" -F qcow2 "$SRC/leak.qcow2"
chmod 644 "$SRC/leak.qcow2"
ln -s "$T/base600.qcow2" "$SRC/rootlink.qcow2"
# Root's image, readable by all, and uid 65534's overlay of it; uid 65534's
# own image and its overlay.
qemu-img create -q -f qcow2 "$SRC/root.qcow2" 4M
chmod 644 "$SRC/root.qcow2"
as_user qemu-img create -q -f qcow2 -u -b root.qcow2 -F qcow2 "$SRC/bkroot.qcow2" 4M
as_user qemu-img create -q -f qcow2 "$SRC/ubase.qcow2" 4M
as_user qemu-img create -q -f qcow2 -b ubase.qcow2 -F qcow2 "$SRC/uov.qcow2"
# A directory of uid 65534's outside SOURCE, with its links: one to root's
# 0600 image, named by root's overlay; one to its own image, named by its own.
mkdir -p "$T/pub" && chown "$U:$U" "$T/pub"
as_user ln -s "$T/base600.qcow2" "$T/pub/to-root.qcow2"
as_user qemu-img create -q -f qcow2 "$T/pub/own.qcow2" 4M
as_user ln -s "$T/pub/own.qcow2" "$T/pub/to-own.qcow2"
qemu-img create -q -f qcow2 -u -b "$T/pub/to-root.qcow2" -F qcow2 "$SRC/viaulink.qcow2" 4M
as_user qemu-img create -q -f qcow2 -u -b "$T/pub/to-own.qcow2" -F qcow2 "$SRC/viaownlink.qcow2" 4M

mount_imgfs "$SRC" "$MNT" --log "$T/log"

log "the root daemon keeps only the capabilities serving needs"
daemon=$(pgrep -f -- "mount .*$SRC $MNT\$" | head -1)
[[ -n $daemon ]] || fail "no daemon process found for $MNT"
mine=$(( 16#$(awk '/^CapPrm/ {print $2}' /proc/self/status) ))
prm=$(( 16#$(awk '/^CapPrm/ {print $2}' "/proc/$daemon/status") ))
bnd=$(( 16#$(awk '/^CapBnd/ {print $2}' "/proc/$daemon/status") ))
# chown dac_override dac_read_search fowner fsetid setgid setuid sys_admin sys_ptrace
kept=$(( (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 6) | (1 << 7) | (1 << 21) | (1 << 19) ))
(( (prm & ~kept) == 0 )) || fail "the daemon keeps capabilities $(printf '%x' $((prm & ~kept))) beyond those it needs"
(( (bnd & ~kept) == 0 )) || fail "the daemon's bounding set keeps $(printf '%x' $((bnd & ~kept)))"
(( prm == (mine & kept) )) || fail "the daemon lost capabilities it needs: $(printf '%x' $(( (mine & kept) & ~prm )))"
(( (prm & (1 << 24)) == 0 )) || fail "the daemon keeps CAP_SYS_RESOURCE"
echo "   daemon $daemon: CapPrm $(printf '%x' $prm) (this shell: $(printf '%x' $mine)); no CAP_SYS_RESOURCE"

log "no user pins another's image read-only by making an overlay of it"
ro() { getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/$1/disk.raw"; }
[[ $(ro root.qcow2) == 0 ]] || fail "root.qcow2 pinned by uid $U's overlay: $(ro root.qcow2)"
[[ $(ro bkroot.qcow2) == "1: its backing chain holds root.qcow2, which belongs to someone who may change it" ]] ||
    fail "bkroot.qcow2: $(ro bkroot.qcow2)"
as_user qemu-img create -q -f qcow2 -u -b root.qcow2 -F qcow2 "$SRC/bkroot2.qcow2" 4M
wait_for test -d "$MNT/bkroot2.qcow2" || fail "bkroot2.qcow2 not listed"
[[ $(ro bkroot2.qcow2) == 1:* ]] || fail "bkroot2.qcow2 made while mounted is writable: $(ro bkroot2.qcow2)"
[[ $(ro root.qcow2) == 0 ]] || fail "root.qcow2 pinned by an overlay made while mounted: $(ro root.qcow2)"
printf 'root' | dd of="$MNT/root.qcow2/disk.raw" bs=1 conv=notrunc,fsync status=none || fail "root cannot write root.qcow2"
[[ $(ro ubase.qcow2) == "1: it is the backing file of uov.qcow2" ]] || fail "ubase.qcow2: $(ro ubase.qcow2)"
echo "   root.qcow2 writable; bkroot.qcow2: $(ro bkroot.qcow2); ubase.qcow2 pinned by its owner's overlay"

log "an image naming a file its owner cannot open is left out, with the reason"
for n in e.qcow2 e2.qcow2 d.qcow2 link.qcow2; do
    [[ ! -e $MNT/$n ]] || fail "$n is served although it names a file uid $U cannot open"
    grep -q "left out $SRC/$n: .*Permission denied" "$T/log" || {
        cat "$T/log" >&2
        fail "$n: no 'left out ... Permission denied' line in the log"
    }
    echo "   $n: $(grep "left out $SRC/$n" "$T/log" | head -1 | sed 's/.*left out/left out/')"
done
cmp "$ROOTONLY/secret.raw" "$T/secret.orig" || fail "the root-only file changed"

log "a symlink of another user's on the way to a named file is not followed"
[[ ! -e $MNT/viaulink.qcow2 ]] || fail "root's image is served through uid $U's symlink to its backing file"
grep -q "left out $SRC/viaulink.qcow2: .*symlink to-root.qcow2 on the way belongs to uid $U" "$T/log" ||
    { cat "$T/log" >&2; fail "viaulink.qcow2: no 'symlink ... belongs to uid $U' line in the log"; }
[[ -d $MNT/viaownlink.qcow2 ]] || fail "uid $U's image through uid $U's own symlink is not served"
echo "   $(grep "left out $SRC/viaulink.qcow2" "$T/log" | head -1 | sed 's/.*left out/left out/')"

log "root's own symlink to root's image is served"
cmp -n $M "$MNT/rootlink.qcow2/disk.raw" "$T/base600.raw" ||
    fail "rootlink.qcow2 reads wrong"

log "a commit into a backing file the owner may not write fails; the file is unchanged"
printf 'XXXX' | as_user dd of="$MNT/c.qcow2/disk.raw" bs=4k conv=notrunc status=none ||
    fail "uid $U cannot write its own image"
echo commit | as_user tee "$MNT/c.qcow2/ctl" >/dev/null || true
for _ in $(seq 1 50); do grep -q "current: idle" "$MNT/c.qcow2/ctl" && break; sleep 0.1; done
state=$(cat "$MNT/c.qcow2/ctl")
grep -q "last: commit: error: .*Permission denied" <<<"$state" || fail "commit state: $state"
[[ $(sha256sum < "$T/base644.qcow2") == "$sha_base644" ]] || fail "base644.qcow2 changed by a refused commit"
echo "   $(head -1 <<<"$state")"

log "views over a root-only backing file are not readable by others"
mode=$(stat -c %a "$MNT/leak.qcow2/disk.raw")
[[ $mode == 600 ]] || fail "leak.qcow2/disk.raw shows mode $mode, expected 600 (backing file is 0600)"
for v in disk.raw layers/0-leak.qcow2.raw layers/1-base600.qcow2.raw info.json; do
    if as_user head -c 1 "$MNT/leak.qcow2/$v" >/dev/null 2>&1; then fail "uid $U read leak.qcow2/$v"; fi
    out=$(as_user head -c 1 "$MNT/leak.qcow2/$v" 2>&1 >/dev/null || true)
    [[ $out == *"Permission denied"* ]] || fail "uid $U reading leak.qcow2/$v: '$out', not EACCES"
done
if as_user getfattr -n user.imgfs.backing_file "$MNT/leak.qcow2" >/dev/null 2>&1; then
    fail "uid $U read the attributes of leak.qcow2's directory"
fi
if as_user ls "$MNT/leak.qcow2" >/dev/null 2>&1; then fail "uid $U listed leak.qcow2/"; fi
cmp -n $M "$MNT/leak.qcow2/disk.raw" "$T/base600.raw" ||
    fail "root cannot read leak.qcow2 right"
getfattr -n user.imgfs.backing_file "$MNT/leak.qcow2" >/dev/null || fail "root cannot read the attributes"
echo "   disk.raw 0600, views, info.json and attributes: EACCES for uid $U, readable by root"

log "the bits follow the backing file; opens check the caller against each file"
chmod 644 "$T/base600.qcow2"
sleep 1.2  # the attribute timeout: the kernel asks for the new bits
[[ $(stat -c %a "$MNT/leak.qcow2/disk.raw") == 644 ]] || fail "bits did not follow the backing file to 0644"
as_user head -c 1 "$MNT/leak.qcow2/disk.raw" >/dev/null || fail "uid $U cannot read once the backing is 0644"
# 0604 with group $U: everyone may read it but members of group $U. The
# view's bits (0644) cannot say that; the open must.
chgrp "$U" "$T/base600.qcow2"
chmod 604 "$T/base600.qcow2"
sleep 1.2
[[ $(stat -c %a "$MNT/leak.qcow2/disk.raw") == 644 ]] || fail "bits over a 0604 backing file: not 644"
out=$(as_user head -c 1 "$MNT/leak.qcow2/disk.raw" 2>&1 >/dev/null || true)
[[ $out == *"Permission denied"* ]] || fail "uid $U (group $U) reads a view over a 0604 file of group $U: '$out'"
setpriv --reuid=65533 --regid=65533 --clear-groups head -c 1 "$MNT/leak.qcow2/disk.raw" >/dev/null ||
    fail "uid 65533 (others) cannot read a view over a 0604 file"
chgrp 0 "$T/base600.qcow2"
chmod 600 "$T/base600.qcow2"
echo "   group $U denied by the open, uid 65533 (others) let in"

log "a user's own image stays the user's"
as_user head -c 1 "$MNT/mine.qcow2/disk.raw" >/dev/null || fail "uid $U cannot read its own 0600 image"
r=$(as_user bash -c "$(declare -f write_errno); PY=$PY write_errno '$MNT/mine.qcow2/disk.raw'")
[[ $r == OK ]] || fail "uid $U writing its own image: $r"
[[ $(stat -c %a "$MNT/mine.qcow2") == 700 ]] || fail "mine.qcow2/ shows $(stat -c %a "$MNT/mine.qcow2"), expected 700"
[[ $(stat -c %u "$MNT/mine.qcow2/layers") == "$U" ]] || fail "layers/ not owned by the image's owner"
umount_imgfs "$MNT"
check_clean "$SRC/c.qcow2"
check_clean "$SRC/mine.qcow2"
echo "PASS: shared_access"
