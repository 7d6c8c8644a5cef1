#!/usr/bin/env bash
# kill -9 during control operations (snapshot create, delete and apply, a
# shrinking resize, a commit) through a mount: after the crash, the next open by imgfs
# (a mount) and, on a copy, by qemu (qemu-io, read-write) leaves the image
# with leaks at most, and every byte fsync'd before the operation began is
# intact (after an apply: the old disk or the snapshot's, whole).
# Rounds: KILL9_CONTROL_ROUNDS (default 16), each killed after a delay from
# a spread of 2-60 ms.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img qemu-io setfattr sha256sum
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
M=$((1024 * 1024))
ROUNDS=${KILL9_CONTROL_ROUNDS:-16}
IMG=$SRC/vm.qcow2
# 4 KiB clusters: thousands of refcounts to change, so that the kills land
# inside the operations, not only before or after them.
qemu-img create -q -f qcow2 -o cluster_size=4k "$IMG" 64M
qemu-io -f qcow2 -c "write -P 0x11 0 24M" "$IMG" >/dev/null
qemu-img snapshot -c base "$IMG"

DAEMON=""
stop_daemon() {
    [[ -n $DAEMON ]] && kill -9 "$DAEMON" 2>/dev/null || true
    [[ -n $DAEMON ]] && wait "$DAEMON" 2>/dev/null || true
    fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    DAEMON=""
}
add_cleanup stop_daemon
start_daemon() {  # [IMAGE]: the one to wait for
    "$IMGFS" mount -f "$SRC" "$MNT" 2>>"$T/log" &
    DAEMON=$!
    for _ in $(seq 1 100); do [[ -e $MNT/${1:-vm.qcow2}/disk.raw ]] && return 0; sleep 0.05; done
    fail "mount did not come up"
}
# The state qemu sees now, as a hash of the raw disk.
disk_sha() { qemu-img convert -U -O raw "$1" "$T/now.raw" && sha256sum < "$T/now.raw" | cut -c1-64; }
# At most leaks: qemu-img check exits 0 or 3.
leaks_only() {
    local rc=0
    qemu-img check -q "$1" >"$T/check.out" 2>&1 || rc=$?
    [[ $rc == 0 || $rc == 3 ]] || { cat "$T/check.out" >&2; fail "$2: qemu-img check exit $rc"; }
}

DELAYS=(0.002 0.005 0.008 0.01 0.015 0.02 0.025 0.03 0.04 0.06)
dirty_seen=0
for ((r = 0; r < ROUNDS; ++r)); do
    start_daemon
    D=$MNT/vm.qcow2/disk.raw
    # New data, durable before the operation starts.
    head -c $((4 * M)) /dev/urandom | dd of="$D" bs=1M seek=$(( (r % 10) * 2 )) conv=notrunc,fsync status=none
    case $((r % 4)) in
        0) op=(setfattr -n user.imgfs.snapshot.create -v "s$r" "$D") ;;
        1) op=(setfattr -n user.imgfs.snapshot.delete -v "s$((r - 1))" "$D") ;;
        2) op=(setfattr -n user.imgfs.snapshot.apply -v base "$D") ;;
        3) op=(setfattr -n user.imgfs.resize -v 48M,shrink "$D") ;;
    esac
    # What the disk must read as afterwards: now (all of it was fsync'd),
    # or after an apply the snapshot's.
    before=$(disk_sha "$IMG")
    cp "$T/now.raw" "$T/before.raw"
    "${op[@]}" 2>/dev/null &
    opid=$!
    sleep "${DELAYS[$((r % ${#DELAYS[@]}))]}"
    stop_daemon
    wait "$opid" 2>/dev/null || true
    [[ $(qemu-img info -U --output=json "$IMG") == *'"dirty-flag": true'* ]] && dirty_seen=$((dirty_seen + 1))

    # qemu's next open, on a copy.
    cp --sparse=always "$IMG" "$T/q.qcow2"
    qemu-io -f qcow2 -c "read 0 512" "$T/q.qcow2" >/dev/null
    leaks_only "$T/q.qcow2" "round $r (${op[2]}), after qemu's open"
    # imgfs's next open: a mount, unmounted at once.
    start_daemon
    "$IMGFS" umount "$MNT" || fail "round $r: umount failed"
    wait "$DAEMON" 2>/dev/null || true
    DAEMON=""
    leaks_only "$IMG" "round $r (${op[2]}), after imgfs's open"
    after=$(disk_sha "$IMG")
    case ${op[2]} in
        user.imgfs.snapshot.apply)
            base_sha=$(qemu-img convert -U -O raw -l snapshot.name=base "$IMG" "$T/base.raw" && sha256sum < "$T/base.raw" | cut -c1-64)
            [[ $after == "$before" || $after == "$base_sha" ]] || fail "round $r: after an interrupted apply the disk is neither the old one nor the snapshot's"
            ;;
        user.imgfs.resize)
            cmp -n $((48 * M)) "$T/now.raw" "$T/before.raw" || fail "round $r: fsync'd bytes lost by an interrupted shrink"
            # Back to 64M for the next rounds (bytes past 48M read as zeros).
            qemu-img resize -q "$IMG" 64M
            ;;
        *) [[ $after == "$before" ]] || fail "round $r (${op[2]}): fsync'd bytes lost" ;;
    esac
    echo "   round $r: ${op[2]}=${op[4]}, killed after ${DELAYS[$((r % ${#DELAYS[@]}))]} s: leaks at most, data intact"
done
echo "   $dirty_seen of $ROUNDS rounds were killed inside the dirty window"
leaks_only "$IMG" "at the end"

# Commit: killed while it copies into the base or empties the top. The disk
# reads the same whatever the moment (the base holds the data, durably,
# before the top lets go of it).
rm -f "$IMG"
BASE=$T/base.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4k "$BASE" 64M
qemu-io -f qcow2 -c "write -P 0x22 0 32M" "$BASE" >/dev/null
qemu-img create -q -f qcow2 -o cluster_size=4k -b "$BASE" -F qcow2 "$SRC/top.qcow2"
CROUNDS=${KILL9_COMMIT_ROUNDS:-6}
for ((r = 0; r < CROUNDS; ++r)); do
    start_daemon top.qcow2
    head -c $((8 * M)) /dev/urandom | dd of="$MNT/top.qcow2/disk.raw" bs=1M seek=$((r * 4)) conv=notrunc,fsync status=none
    before=$(disk_sha "$SRC/top.qcow2")
    echo commit > "$MNT/top.qcow2/ctl" &
    sleep "${DELAYS[$((r * 3 % ${#DELAYS[@]}))]}"
    stop_daemon
    wait 2>/dev/null || true
    start_daemon top.qcow2
    "$IMGFS" umount "$MNT" || fail "commit round $r: umount failed"
    wait "$DAEMON" 2>/dev/null || true
    DAEMON=""
    leaks_only "$SRC/top.qcow2" "commit round $r: the top"
    leaks_only "$BASE" "commit round $r: the base"
    [[ $(disk_sha "$SRC/top.qcow2") == "$before" ]] || fail "commit round $r: the disk changed"
    echo "   commit round $r, killed after ${DELAYS[$((r * 3 % ${#DELAYS[@]}))]} s: leaks at most, the disk unchanged"
done
echo "PASS: kill9_control"
