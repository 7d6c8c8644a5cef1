#!/usr/bin/env bash
# Programs that make images in a SOURCE mounted read-write (claim=mount, the
# default) never fail because of the mount: qemu-img create, convert and
# rebase, qemu-io and cp, 40 rounds each, while other readers load the mount.
# qemu-img closes and reopens what it makes, and the mount sees every close;
# a claim taken then would make its next open fail ("Failed to get write
# lock"). Afterwards every image made is writable in the same mount, and
# reads as qemu-img does.
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
ROUNDS=40

qemu-img create -q -f qcow2 "$SRC/busy.qcow2" 16M
qemu-io -f qcow2 -c "write -P 0x5a 0 8M" "$SRC/busy.qcow2" > /dev/null
mount_imgfs "$SRC" "$MNT" --log "$T/log"

# Load: readers of the mount, so that the watcher and the tools compete.
LOAD=()
stop_load() {
    local p
    for p in "${LOAD[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${LOAD[@]}"; do wait "$p" 2>/dev/null || true; done
    LOAD=()
}
add_cleanup stop_load
for _ in 1 2; do
    (while :; do cat "$MNT/busy.qcow2/disk.raw" > /dev/null; ls "$MNT" > /dev/null; done) 2>/dev/null &
    LOAD+=($!)
done

log "$ROUNDS rounds of qemu-img create/convert/rebase, qemu-io and cp into SOURCE"
run() { "$@" > "$T/out" 2>&1 || fail "round $i: $* failed: $(cat "$T/out")"; }
for i in $(seq 1 $ROUNDS); do
    run qemu-img create -q -f qcow2 "$SRC/t$i.qcow2" 16M
    run qemu-io -f qcow2 -c "write -P $((i % 250 + 1)) 0 64k" "$SRC/t$i.qcow2"
    run qemu-img convert -O qcow2 "$SRC/t$i.qcow2" "$SRC/c$i.qcow2"
    run qemu-img create -q -f qcow2 -b "t$i.qcow2" -F qcow2 "$SRC/o$i.qcow2"
    run qemu-img rebase -b "c$i.qcow2" -F qcow2 "$SRC/o$i.qcow2"
    run cp "$SRC/c$i.qcow2" "$SRC/p$i.qcow2"
done
stop_load
echo "   all $((ROUNDS * 6)) runs succeeded"

log "each image made is listed, reads as qemu-img reads it, and is writable in the same mount"
# The overlays make t$i and c$i backing files (read-only by rule); p$i
# (copied) and o$i (the overlay) are the ones to write.
for i in $(seq 1 $ROUNDS); do
    for n in "o$i" "p$i"; do
        wait_for test -d "$MNT/$n.qcow2" || fail "$n.qcow2 not listed"
        qemu-img convert -U -O raw "$SRC/$n.qcow2" "$T/want.raw"
        cmp -s "$T/want.raw" "$MNT/$n.qcow2/disk.raw" || fail "$n.qcow2 reads differently from qemu-img"
        ro=$(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/$n.qcow2/disk.raw")
        [[ $ro == 0 ]] || fail "$n.qcow2 is read-only in the mount: $ro"
        printf 'written by the mount' | dd of="$MNT/$n.qcow2/disk.raw" bs=1 seek=1048576 conv=notrunc,fsync status=none ||
            fail "cannot write $n.qcow2 through the mount"
    done
done
echo "   o1..o$ROUNDS and p1..p$ROUNDS read as qemu-img reads them and took a write"
umount_imgfs "$MNT"
for i in 1 $((ROUNDS / 2)) $ROUNDS; do
    for n in "o$i" "p$i"; do
        check_clean "$SRC/$n.qcow2"
        [[ $(qemu-io -f qcow2 -c "read -v 1048576 16" "$SRC/$n.qcow2" | head -1) == *"written.by.the.m"* ]] ||
            fail "the mount's write to $n.qcow2 is not in the file"
    done
done
echo "PASS: make_in_source"
