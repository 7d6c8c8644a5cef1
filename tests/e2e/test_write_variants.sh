#!/usr/bin/env bash
# Writes through the mount into every kind of qcow2 qemu-img 7.2 makes:
# zlib- and zstd-compressed clusters, extended L2 (subclusters) over a
# backing file, an external data file (raw and not), refcount_bits=1,
# compat=0.10, lazy refcounts, preallocated, with snapshots, with bitmaps.
# After unmount each image passes qemu-img check and compares equal to a
# model (qemu's own view of the original with the same bytes written).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io dd cmp
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt EXP=$T/exp
mkdir -p "$SRC" "$MNT" "$EXP"
M=$((1024 * 1024))
head -c $((4 * M)) /dev/urandom > "$T/pat"
"$PY" -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * (32 << 12))" > "$T/text.raw"   # 32 MiB, compressible

log "making the images"
(
    cd "$SRC"
    qemu-img convert -q -c -f raw -O qcow2 "$T/text.raw" zlib.qcow2
    qemu-img convert -q -c -f raw -O qcow2 -o compression_type=zstd "$T/text.raw" zstd.qcow2
    qemu-img create -q -f qcow2 -o extended_l2=on base-x.qcow2 32M
    qemu-io -f qcow2 -c "write -P 0x41 0 32M" base-x.qcow2 >/dev/null
    mv base-x.qcow2 "$T/base-x.qcow2"
    qemu-img create -q -f qcow2 -o extended_l2=on -b "$T/base-x.qcow2" -F qcow2 subcluster.qcow2
    # absolute: qemu-img 7.2 resolves a relative data_file against its working directory
    qemu-img create -q -f qcow2 -o "data_file=$T/datafile.bin" datafile.qcow2 32M
    qemu-img create -q -f qcow2 -o "data_file=$T/rawdata.bin,data_file_raw=on" rawdata.qcow2 32M
    qemu-img create -q -f qcow2 -o refcount_bits=1,cluster_size=4k rc1.qcow2 32M
    qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 32M
    qemu-img create -q -f qcow2 -o lazy_refcounts=on lazy.qcow2 32M
    qemu-img create -q -f qcow2 -o preallocation=metadata prealloc.qcow2 32M
    qemu-img create -q -f qcow2 snap.qcow2 32M
    qemu-io -f qcow2 -c "write -P 0x51 0 32M" snap.qcow2 >/dev/null
    qemu-img snapshot -c first snap.qcow2
    qemu-img create -q -f qcow2 bitmaps.qcow2 32M
    qemu-img bitmap --add bitmaps.qcow2 b0
)
IMAGES=(zlib zstd subcluster datafile rawdata rc1 v2 lazy prealloc snap bitmaps)
for i in "${IMAGES[@]}"; do to_raw "$SRC/$i.qcow2" "$EXP/$i.raw"; done
qemu-img convert -q -l first -O raw "$SRC/snap.qcow2" "$EXP/snap-first.raw"

# The same writes everywhere: sub-cluster, straddling clusters and
# subclusters, whole clusters, the last bytes.
WRITES="1 5000 | 70000 3000 | 131072 65536 | 1000000 300000 | 5242880 1048576 | 33550000 4432"
mount_imgfs "$SRC" "$MNT"
for i in "${IMAGES[@]}"; do
    IFS='|' read -ra ws <<<"$WRITES"
    for w in "${ws[@]}"; do
        # shellcheck disable=SC2086
        set -- $w
        write_at "$T/pat" 0 "$MNT/$i.qcow2/disk.raw" "$1" "$2" fsync || fail "$i: write $w through the mount"
        write_at "$T/pat" 0 "$EXP/$i.raw" "$1" "$2"
    done
    assert_same "$MNT/$i.qcow2/disk.raw" "$EXP/$i.raw" "$i.qcow2/disk.raw after writes"
done
umount_imgfs "$MNT"

log "qemu-img check and compare"
for i in "${IMAGES[@]}"; do
    check_clean "$SRC/$i.qcow2"
    out=$(qemu-img compare -q -f qcow2 -F raw "$SRC/$i.qcow2" "$EXP/$i.raw" 2>&1) || fail "$i: qemu-img compare: $out"
done
qemu-img convert -q -l first -O raw "$SRC/snap.qcow2" "$T/snap-first.after"
cmp -s "$T/snap-first.after" "$EXP/snap-first.raw" || fail "snap.qcow2: the snapshot changed"
qemu-img info "$SRC/bitmaps.qcow2" | grep -q "name: b0" || fail "bitmaps.qcow2: bitmap b0 lost"
cmp -s <(head -c 32M "$T/rawdata.bin") "$EXP/rawdata.raw" || fail "rawdata.bin is no longer the raw disk"
echo "   ${IMAGES[*]}: clean and equal to the model"
echo "PASS: write_variants"
