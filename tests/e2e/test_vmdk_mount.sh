#!/usr/bin/env bash
# VMDK images in a mount: every subformat appears once (its extent files do
# not), reads like `qemu-img convert`, SEEK_DATA/SEEK_HOLE follow
# `qemu-img map`, the layers of the gold <- dept <- user chain read like
# each level, attributes and info.json show what imgfs info shows, sizes
# count every file, `cp --sparse` copies the disk, writes and punched
# holes land (qemu-img check and compare agree after unmount) where the
# layout takes them and fail with EROFS and the reason where not, and an image whose extent is missing is left out with
# the file named in the log while the rest keep serving.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io getfattr cmp fallocate
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
M=$((1024 * 1024))
cd "$SRC"
qemu-img create -q -f vmdk base_os_gold.vmdk 64M
qemu-io -f vmdk -c "write -P 0x11 0 1M" -c "write -P 0x12 $((40 * M + 3)) 70000" base_os_gold.vmdk >/dev/null
qemu-img create -q -f vmdk -b base_os_gold.vmdk -F vmdk dept_dev.vmdk
qemu-io -f vmdk -c "write -P 0x21 $((512 * 1024 + 1)) 1M" dept_dev.vmdk >/dev/null
qemu-img create -q -f vmdk -b dept_dev.vmdk -F vmdk user_alice.vmdk
qemu-io -f vmdk -c "write -P 0x31 100 200" -c "write -P 0x32 $((63 * M)) 1M" user_alice.vmdk >/dev/null
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse split.vmdk 2100M
qemu-io -f vmdk -c "write -P 0x41 $((2048 * M - 5000)) 10000" split.vmdk >/dev/null
qemu-img create -q -f vmdk -o subformat=monolithicFlat flat.vmdk 8M
qemu-io -f vmdk -c "write -P 0x51 $((3 * M)) 8192" flat.vmdk >/dev/null
head -c $((2 * M)) /dev/urandom >s.raw && head -c $((2 * M)) /dev/zero >>s.raw
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized s.raw stream.vmdk && rm s.raw
printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "gone-flat.vmdk" 0\n' >broken.vmdk
qemu-img create -q -f qcow2 ok.qcow2 1M
cd "$T"

mount_imgfs "$SRC" "$MNT" --log "$T/log"
log "each image once, its extents not"
got=$(ls "$MNT" | tr '\n' ' ')
[[ $got == "base_os_gold.vmdk dept_dev.vmdk flat.vmdk ok.qcow2 split.vmdk stream.vmdk user_alice.vmdk " ]] ||
    fail "listed: $got"
grep -q "left out $SRC/broken.vmdk: .*gone-flat.vmdk" "$T/log" || fail "the log does not name the missing extent: $(cat "$T/log")"
echo "   $got"

log "disk.raw and the layers read like qemu; holes where qemu-img map has them"
for img in user_alice dept_dev base_os_gold split flat stream; do
    to_raw_vmdk() { qemu-img convert -U -f vmdk -O raw "$1" "$2" || fail "qemu-img convert $1"; }
    to_raw_vmdk "$SRC/$img.vmdk" "$T/$img.raw"
    # (split's 2100 MiB are read once, by cp --sparse below.)
    [[ $img == split ]] || assert_same "$MNT/$img.vmdk/disk.raw" "$T/$img.raw" "$img.vmdk/disk.raw"
    if [[ $img != flat ]]; then  # qemu maps a flat extent as data throughout; its holes are holes here
        qemu-img map -U --output=json -f vmdk "$SRC/$img.vmdk" >"$T/map.json"
        seek_map_is "$MNT/$img.vmdk/disk.raw" "$T/map.json" || fail "$img.vmdk: SEEK_DATA/SEEK_HOLE differ from qemu-img map"
    fi
done
layers=$(ls "$MNT/user_alice.vmdk/layers" | tr '\n' ' ')
[[ $layers == "0-user_alice.vmdk.raw 1-dept_dev.vmdk.raw 2-base_os_gold.vmdk.raw " ]] || fail "layers: $layers"
assert_same "$MNT/user_alice.vmdk/layers/1-dept_dev.vmdk.raw" "$T/dept_dev.raw" "layers/1-dept_dev.vmdk.raw"
assert_same "$MNT/user_alice.vmdk/layers/2-base_os_gold.vmdk.raw" "$T/base_os_gold.raw" "layers/2-base_os_gold.vmdk.raw"
[[ ! -e $MNT/user_alice.vmdk/snapshots ]] || fail "a snapshots/ directory for a format without internal snapshots"

log "attributes, info.json"
attr() { getfattr --absolute-names --only-values -n "user.imgfs.$2" "$MNT/$1/disk.raw"; }
[[ $(attr user_alice.vmdk format) == vmdk ]] || fail "format: $(attr user_alice.vmdk format)"
[[ $(attr user_alice.vmdk create_type) == monolithicSparse ]] || fail "create_type: $(attr user_alice.vmdk create_type)"
want_cid=$(qemu-img info -U --output=json "$SRC/dept_dev.vmdk" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["cid"])')
[[ $(attr user_alice.vmdk parent_cid) == "$want_cid" ]] || fail "parent_cid $(attr user_alice.vmdk parent_cid), dept_dev's cid is $want_cid"
[[ $(attr dept_dev.vmdk cid) == "$want_cid" ]] || fail "cid of dept_dev $(attr dept_dev.vmdk cid), qemu says $want_cid"
ext=$(attr split.vmdk extents)
[[ $ext == "2147483648 65536 SPARSE $SRC/split-s001.vmdk"$'\n'"54525952 65536 SPARSE $SRC/split-s002.vmdk" ]] || fail "extents: $ext"
[[ $(attr user_alice.vmdk backing_file) == dept_dev.vmdk ]] || fail "backing_file: $(attr user_alice.vmdk backing_file)"
"$IMGFS" info --output=json --backing-chain "$SRC/user_alice.vmdk" >"$T/info.json"
cmp -s "$T/info.json" "$MNT/user_alice.vmdk/info.json" || fail "info.json differs from imgfs info --backing-chain --output=json"
want=0
for f in split.vmdk split-s001.vmdk split-s002.vmdk; do want=$((want + $(stat -c %b "$SRC/$f") * 512)); done
[[ $(attr split.vmdk allocated) == "$want" ]] || fail "allocated $(attr split.vmdk allocated), the files hold $want"
[[ $(($(stat -c %b "$MNT/split.vmdk/disk.raw") * 512)) == "$want" ]] || fail "st_blocks of split.vmdk/disk.raw is not the files' sum $want"
echo "   create_type, cid, parent_cid, extents, allocated = $want bytes"

log "cp --sparse"
cp --sparse=always "$MNT/split.vmdk/disk.raw" "$T/copy.raw"
cmp "$T/copy.raw" "$T/split.raw" || fail "cp --sparse copy differs"
[[ $(stat -c %b "$T/copy.raw") -lt 1024 ]] || fail "cp --sparse copy of split.vmdk is not sparse ($(stat -c %b "$T/copy.raw") blocks)"
echo "   a 2100 MiB disk copied in $(stat -c %b "$T/copy.raw") blocks"

log "writes: into a sparse child and a flat disk; the parents and the stream are read-only, with the reason"
printf 'Z%.0s' $(seq 1 5000) | dd of="$MNT/user_alice.vmdk/disk.raw" bs=5000 seek=3 conv=notrunc status=none
printf 'Z%.0s' $(seq 1 5000) | dd of="$T/user_alice.raw" bs=5000 seek=3 conv=notrunc status=none
fallocate -p -o $((1024 * 1024)) -l $((2 * 1024 * 1024)) "$MNT/user_alice.vmdk/disk.raw"
dd if=/dev/zero of="$T/user_alice.raw" bs=1M seek=1 count=2 conv=notrunc status=none
printf 'F%.0s' $(seq 1 4096) | dd of="$MNT/flat.vmdk/disk.raw" bs=4096 seek=100 conv=notrunc status=none
printf 'F%.0s' $(seq 1 4096) | dd of="$T/flat.raw" bs=4096 seek=100 conv=notrunc status=none
sync "$MNT/user_alice.vmdk/disk.raw"
assert_same "$MNT/user_alice.vmdk/disk.raw" "$T/user_alice.raw" "user_alice.vmdk/disk.raw after writes"
for img in dept_dev base_os_gold stream; do
    r=$(write_errno "$MNT/$img.vmdk/disk.raw")
    [[ $r == EROFS ]] || fail "writing $img.vmdk gave $r"
done
[[ $(attr dept_dev.vmdk read_only) == "1: it is the backing file of user_alice.vmdk" ]] || fail "dept_dev read_only: $(attr dept_dev.vmdk read_only)"
[[ $(attr stream.vmdk read_only) == "1: streamOptimized (compressed) extents are served read-only" ]] ||
    fail "stream read_only: $(attr stream.vmdk read_only)"
echo "   written; EROFS for the parents and the stream"

log "resize through ctl: split.vmdk gains an extent file, which is not listed"
echo "resize +2G" >"$MNT/split.vmdk/ctl"
grep -q "^last: resize +2G: ok" "$MNT/split.vmdk/ctl" || fail "ctl resize: $(cat "$MNT/split.vmdk/ctl")"
[[ $(stat -c %s "$MNT/split.vmdk/disk.raw") == $((4148 * M)) ]] || fail "split.vmdk/disk.raw is $(stat -c %s "$MNT/split.vmdk/disk.raw") bytes"
[[ -f $SRC/split-s003.vmdk ]] || fail "no split-s003.vmdk after the resize"
sleep 0.5  # the watcher has seen the new file by now
got=$(ls "$MNT" | tr '\n' ' ')
[[ $got == "base_os_gold.vmdk dept_dev.vmdk flat.vmdk ok.qcow2 split.vmdk stream.vmdk user_alice.vmdk " ]] ||
    fail "listed after the resize: $got"
# Made and claimed on one descriptor, never closed while the descriptor
# does not name it: the watcher never takes it for an image of its own.
! grep "split-s003" "$T/log" | grep -v "a new file of split.vmdk" || fail "the watcher took split-s003.vmdk for an image"
printf 'E%.0s' $(seq 1 4096) | dd of="$MNT/split.vmdk/disk.raw" bs=4096 seek=$((4148 * 256 - 1)) conv=notrunc status=none
sync "$MNT/split.vmdk/disk.raw"
want=0
for f in split.vmdk split-s001.vmdk split-s002.vmdk split-s003.vmdk; do want=$((want + $(stat -c %b "$SRC/$f") * 512)); done
[[ $(attr split.vmdk allocated) == "$want" ]] || fail "allocated $(attr split.vmdk allocated) after the resize, the files hold $want"
[[ $(stat -c %u "$SRC/split-s003.vmdk") == $(stat -c %u "$SRC/split.vmdk") ]] || fail "split-s003.vmdk has another owner than split.vmdk"
echo "   4148 MiB, split-s003.vmdk not listed and counted in allocated, the new end written"
mount_alive "$MNT" || fail "the mount died"
[[ $(head -c 4 "$MNT/ok.qcow2/disk.raw" | wc -c) == 4 ]] || fail "ok.qcow2 does not read"
umount_imgfs "$MNT"
for img in user_alice flat; do
    out=$(qemu-img check -f vmdk "$SRC/$img.vmdk" 2>&1) || fail "qemu-img check $img.vmdk after the mount: $out"
    qemu-img compare -f vmdk -F raw "$SRC/$img.vmdk" "$T/$img.raw" >/dev/null || fail "$img.vmdk differs from what was written"
done
out=$(qemu-img check -f vmdk "$SRC/split.vmdk" 2>&1) || fail "qemu-img check split.vmdk after the resize: $out"
qemu-io -f vmdk -c "read -P 0x45 $((4148 * M - 4096)) 4096" "$SRC/split.vmdk" | grep -q "verification failed" &&
    fail "qemu does not read the grown end of split.vmdk"

echo "   qemu-img check clean and compare equal after unmount"
echo "PASS: vmdk_mount"
