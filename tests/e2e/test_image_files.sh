#!/usr/bin/env bash
# An image of several files (here a qcow2 with an external data file named
# like a raw image) is one entry in the mount: its data file is not listed
# as an image of its own, the mount claims both files with QEMU's locks,
# sizes count both, and a change another program makes to the data file
# reopens the image. A new image that takes a listed file as its data file
# takes it out of the listing. Temporary files of a create are never listed.
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
listed() { ls "$MNT" | grep -qx -- "$1"; }

(cd "$SRC" && qemu-img create -q -f qcow2 -o data_file=x.img x.qcow2 8M)
(cd "$SRC" && qemu-io -f qcow2 -c "write -P 0x61 0 4M" x.qcow2 >/dev/null)  # qemu resolves a data file against the working directory
qemu-img create -q -f raw "$SRC/plain.img" 1M
qemu-img create -q -f qcow2 "$SRC/half.qcow2.imgfs-tmp-0badf00d" 1M  # what an interrupted create leaves
if [[ $(id -u) == 0 ]]; then
    # Another user's descriptor that names root's image as its extent.
    qemu-img create -q -f raw "$SRC/rootdisk.img" 1M
    printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "rootdisk.img" 0\n' >"$SRC/evil.vmdk"
    chown 65534:65534 "$SRC/evil.vmdk"
    chmod a+x "$T" && chmod a+rx "$SRC"  # so that uid 65534 reaches its descriptor (and root's disk)
fi

log "the data file is not an image of its own"
mount_imgfs "$SRC" "$MNT" --log "$T/log" -o claim=write
listed x.qcow2 || fail "x.qcow2 not listed"
listed plain.img || fail "plain.img not listed"
listed x.img && fail "x.img (the data file of x.qcow2) is listed as an image"
grep -q "x.img: a file of another image, not listed" "$T/log" || fail "the log does not say why x.img is not listed"
listed half.qcow2.imgfs-tmp-0badf00d && fail "a temporary file of an interrupted create is listed"
ro=$(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/x.qcow2/disk.raw")
[[ $ro == 0 ]] || fail "x.qcow2 read_only: $ro"
echo "   x.img not listed; x.qcow2 writable"
if [[ $(id -u) == 0 ]]; then
    listed rootdisk.img || fail "uid 65534's evil.vmdk hid root's rootdisk.img by naming it as an extent"
    listed evil.vmdk || fail "evil.vmdk (readable extent) not listed"
    echo "   another user's descriptor cannot hide root's image"
else
    echo "   (not root: the test of another user's descriptor is skipped)"
fi

log "sizes count every file of the image"
alloc=$(getfattr --absolute-names --only-values -n user.imgfs.allocated "$MNT/x.qcow2/disk.raw")
want=$(( $(stat -c %b "$SRC/x.qcow2") * 512 + $(stat -c %b "$SRC/x.img") * 512 ))
[[ $alloc == "$want" ]] || fail "user.imgfs.allocated $alloc, the two files hold $want"
[[ $alloc -ge $((4 * M)) ]] || fail "user.imgfs.allocated $alloc: the data file's 4 MiB are not counted"
blocks=$(stat -c %b "$MNT/x.qcow2/disk.raw")
[[ $((blocks * 512)) == "$want" ]] || fail "st_blocks of disk.raw $((blocks * 512)) bytes, the files hold $want"
echo "   allocated = st_blocks = $want bytes"

log "a write claims both files"
printf 'B%.0s' $(seq 1 4096) | dd of="$MNT/x.qcow2/disk.raw" bs=4096 seek=1 conv=notrunc status=none
# (A read-only raw open does not ask for the write lock in qemu; a writer does.)
if qemu-io -f raw -c "write -P 0x71 0 512" "$SRC/x.img" > "$T/out" 2>&1; then
    fail "qemu-io wrote the data file while the mount writes its image"
fi
grep -qi "lock" "$T/out" || fail "qemu-io failed for another reason: $(cat "$T/out")"
echo "   qemu-io cannot write x.img: locked"
umount_imgfs "$MNT"
(cd "$SRC" && check_clean x.qcow2)

log "a change another program makes to the data file reopens its image"
mount_imgfs "$SRC" "$MNT" --log "$T/log2" -o claim=write
cmp -s <(head -c 4096 "$MNT/x.qcow2/disk.raw") <(printf 'a%.0s' $(seq 1 4096)) || fail "x.qcow2 does not start with 'a'"
qemu-io -f raw -c "write -P 0x7a 0 4096" "$SRC/x.img" >/dev/null
wait_for grep -q "x.img (a file of x.qcow2) was changed by another program: reopened" "$T/log2" ||
    fail "the watcher did not reopen x.qcow2 after its data file changed: $(cat "$T/log2")"
cmp -s <(head -c 4096 "$MNT/x.qcow2/disk.raw") <(printf 'z%.0s' $(seq 1 4096)) ||
    fail "x.qcow2/disk.raw does not show the data file's new bytes"
listed x.img && fail "x.img listed after it was written"
echo "   reopened, new bytes shown, x.img still not listed"

log "a new image that takes a listed file as its data file"
(cd "$SRC" && qemu-img create -q -f qcow2 -o data_file=plain.img p.qcow2 1M)
wait_for listed p.qcow2 || fail "p.qcow2 did not appear"
wait_for bash -c "! ls '$MNT' | grep -qx plain.img" || fail "plain.img still listed after p.qcow2 took it as its data file"
echo "   plain.img left the listing"

log "the files an imgfs create makes under temporary names are never listed"
"$IMGFS" create -q -f vmdk -o subformat=twoGbMaxExtentSparse "$SRC/new.vmdk" 3G
wait_for listed new.vmdk || fail "new.vmdk did not appear"
sleep 0.3
got=$(ls "$MNT" | grep -E "new|imgfs-tmp" | tr '\n' ' ')
[[ $got == "new.vmdk " ]] || fail "listed while and after new.vmdk was made: $got"
! grep -E "serving .*(imgfs-tmp|new-s00)" "$T/log2" || fail "a temporary file was served for a while"
echo "   new.vmdk listed, none of its temporary files nor its extents"
umount_imgfs "$MNT"
echo "PASS: image_files"
