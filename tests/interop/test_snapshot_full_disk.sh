#!/usr/bin/env bash
# A snapshot that fails on a full disk gives back what it took: with the
# file system filled to leave 0, 64 or 128 KiB, `imgfs snapshot -c` fails with
# the cause (0: at the copy of the L1 table, 64: at the new snapshot table),
# and qemu-img check finds the image clean (no leaked clusters),
# its snapshots and content as before. Once there is room, it succeeds.
# Needs root to mount a small tmpfs.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io
need_tool "$IMGFS"
[[ $(id -u) == 0 ]] || skip "needs root to mount a small tmpfs"
tmpdir
FS=$T/fs
mkdir -p "$FS"
mount -t tmpfs -o size=64M tmpfs "$FS" 2>/dev/null || skip "cannot mount a tmpfs here"
trap 'umount "$FS" 2>/dev/null || true; _lib_cleanup' EXIT

for free_kib in 0 64 128; do
    rm -f "$FS"/*
    qemu-img create -q -f qcow2 "$FS/i.qcow2" 200M
    qemu-io -f qcow2 -c "write -P 1 0 50M" "$FS/i.qcow2" > /dev/null
    qemu-img snapshot -c before "$FS/i.qcow2"
    qemu-img convert -O raw "$FS/i.qcow2" "$T/want.raw"
    dd if=/dev/zero of="$FS/filler" bs=4k status=none 2>/dev/null || true
    (( free_kib == 0 )) || truncate -s -"${free_kib}K" "$FS/filler"
    rc=0; out=$("$IMGFS" snapshot -c s "$FS/i.qcow2" 2>&1) || rc=$?
    if [[ $rc == 0 ]]; then
        echo "   $free_kib KiB free: the snapshot fitted"
    else
        [[ $rc == 1 && $out == *"No space left on device"* ]] || fail "$free_kib KiB free: exit $rc: $out"
        qemu-img check "$FS/i.qcow2" > "$T/check" 2>&1 || { cat "$T/check" >&2; fail "$free_kib KiB free: qemu-img check after the failed snapshot"; }
        [[ $(qemu-img snapshot -l "$FS/i.qcow2" | awk 'NR > 2 {print $2}') == before ]] ||
            fail "$free_kib KiB free: the snapshots changed"
        echo "   $free_kib KiB free: refused ($out), image clean"
    fi
    qemu-img compare -q -f raw "$T/want.raw" "$FS/i.qcow2" || fail "$free_kib KiB free: the content changed"
    rm "$FS/filler"
    if [[ $rc != 0 ]]; then
        "$IMGFS" snapshot -c s "$FS/i.qcow2" || fail "$free_kib KiB free: the snapshot fails once there is room"
        qcheck "$FS/i.qcow2" "$free_kib KiB free, then room"
    fi
done
echo "PASS: snapshot_full_disk"
