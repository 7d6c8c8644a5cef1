#!/usr/bin/env bash
# Installs what is missing, builds imgfs (Release), makes a demo directory
# of images with `imgfs create`, mounts it and shows what to try.
# Safe to run again: it unmounts and rebuilds the demo each time (also
# after a daemon that died and left its mount behind).
#   IMGFS_DEMO=/var/tmp/imgfs-demo   where the demo lives
#   IMGFS_BUILD=build                the build folder (configured if new)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=deps.sh
source packaging/deps.sh
install_missing "${IMGFS_BUILD_DEPS[@]}" "${IMGFS_RUN_DEPS[@]}"

BUILD=${IMGFS_BUILD:-$ROOT/build}
[[ -f $BUILD/CMakeCache.txt ]] || cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD" -j2 --target imgfs
IMGFS=$BUILD/mounttool/imgfs

DEMO=${IMGFS_DEMO:-/var/tmp/imgfs-demo}
SRC=$DEMO/images
MNT=$DEMO/mnt
# A mount left by an earlier run: unmount it, even if its daemon is gone.
if awk -v m="$MNT" '$2 == m {f = 1} END {exit !f}' /proc/mounts; then
    "$IMGFS" umount "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT"
fi
mkdir -p "$SRC" "$MNT"
rm -f "$SRC"/*

# A base disk with data, written through imgfs itself.
"$IMGFS" create -q -f qcow2 "$SRC/base.qcow2" 256M
"$IMGFS" create -q -f raw "$SRC/data.img" 64M
"$IMGFS" mount "$SRC" "$MNT"
printf 'hello from the base image\n' | dd of="$MNT/base.qcow2/disk.raw" bs=1M conv=notrunc,fsync status=none
head -c 8M /dev/urandom | dd of="$MNT/base.qcow2/disk.raw" bs=1M seek=64 conv=notrunc,fsync status=none
printf 'raw data\n' | dd of="$MNT/data.img/disk.raw" conv=notrunc status=none
"$IMGFS" umount "$MNT"

# An overlay on it: reads fall through to the base, writes stay in the overlay.
"$IMGFS" create -q -f qcow2 -b base.qcow2 -F qcow2 "$SRC/vm.qcow2"
"$IMGFS" mount "$SRC" "$MNT"
printf 'written in the overlay\n' | dd of="$MNT/vm.qcow2/disk.raw" bs=1M seek=128 conv=notrunc,fsync status=none

echo
echo "imgfs is serving $SRC at $MNT:"
(cd "$MNT" && find . -mindepth 1 | sort | sed 's|^\./|  |')
cat <<TRY

Three things to try:
  cmp $MNT/vm.qcow2/layers/1-base.qcow2.raw $MNT/base.qcow2/disk.raw && echo same   # the overlay's base layer is the base disk
  du -h --apparent-size $MNT/vm.qcow2/disk.raw; du -h $MNT/vm.qcow2/disk.raw        # 256M disk, only what is allocated counts
  dev=\$(losetup --find --show $MNT/vm.qcow2/disk.raw) && mkfs.ext4 -q \$dev && mount \$dev /mnt   # a guest filesystem, no qemu-nbd

When done:  $IMGFS umount $MNT
TRY
