#!/usr/bin/env bash
# The README's first command: packaging/quickstart.sh makes the demo
# directory with imgfs create (a qcow2 with data, an overlay on it, a raw
# file), mounts it and prints the tree and three things to try. Run twice
# (re-running is safe), and once more after its daemon was killed.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img cmp du
need_fuse
[[ $(id -u) -eq 0 ]] || skip "quickstart.sh installs packages: needs root"
[[ -n ${IMGFS_BUILD:-} && -f $IMGFS_BUILD/CMakeCache.txt ]] || skip "IMGFS_BUILD is not a configured build folder"
tmpdir
ROOT=$(cd "$HERE/../.." && pwd)
export IMGFS_DEMO=$T/demo
MNT=$IMGFS_DEMO/mnt
add_cleanup "'$IMGFS' umount '$MNT' >/dev/null 2>&1 || fusermount3 -u -z '$MNT' 2>/dev/null"

run_quickstart() { # LABEL
    bash "$ROOT/packaging/quickstart.sh" > "$T/out" 2>&1 || fail "$1: quickstart.sh failed: $(tail -5 "$T/out")"
    mountpoint -q "$MNT" || fail "$1: nothing mounted at $MNT"
    for f in base.qcow2/disk.raw vm.qcow2/disk.raw vm.qcow2/layers/1-base.qcow2.raw data.img/disk.raw; do
        grep -q "  $f" "$T/out" || fail "$1: the printed tree lacks $f"
        [[ -f $MNT/$f ]] || fail "$1: $MNT/$f missing"
    done
    grep -q "Three things to try" "$T/out" || fail "$1: no suggestions printed"
    # the suggestions work
    cmp "$MNT/vm.qcow2/layers/1-base.qcow2.raw" "$MNT/base.qcow2/disk.raw" || fail "$1: the base layer differs from the base disk"
    [[ $(du -b --apparent-size "$MNT/vm.qcow2/disk.raw" | cut -f1) == $((256 << 20)) ]] || fail "$1: apparent size"
    (( $(du -k "$MNT/vm.qcow2/disk.raw" | cut -f1) < 4096 )) || fail "$1: du of the overlay counts more than it holds"
    [[ $(head -c 26 "$MNT/vm.qcow2/disk.raw") == "hello from the base image" ]] || fail "$1: the overlay does not show the base's data"
    [[ $(dd if="$MNT/vm.qcow2/disk.raw" bs=1M skip=128 count=1 status=none | head -c 22) == "written in the overlay" ]] ||
        fail "$1: the overlay's own data"
    echo "   $1: demo mounted, tree printed, suggestions hold"
}
run_quickstart "first run"
run_quickstart "second run"
pkill -9 -f "imgfs mount $IMGFS_DEMO/images" || fail "no daemon to kill"
for _ in $(seq 1 50); do pgrep -f "imgfs mount $IMGFS_DEMO/images" >/dev/null || break; sleep 0.1; done
run_quickstart "after its daemon was killed"
"$IMGFS" umount "$MNT"
for img in base vm; do check_clean "$IMGFS_DEMO/images/$img.qcow2"; done
echo "PASS: quickstart"
