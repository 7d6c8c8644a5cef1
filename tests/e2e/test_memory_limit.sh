#!/usr/bin/env bash
# Memory follows the working set, not the library. 200 qcow2 images, each
# with 2 MiB of L2 tables (4 KiB clusters, data every 2 MiB), read whole:
# held, their tables would cost about 420 MiB.
#  - with nothing given back (a limit of 1G, an idle time of an hour) the
#    daemon's RSS passes 200 MiB: the reads load what the rest measures;
#  - -o cache_limit=16M: the daemon's RSS comes below 64 MiB + 16 MiB (the
#    keeper checks once a second: polled, up to 20 s);
#  - -o cache_idle=2: once nothing reads, RSS comes below 64 MiB;
#  - after either, every image still reads as qemu reads it, through a
#    descriptor opened before the caches went and through new ones;
#  - bad values are refused with one line naming the option.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img qemu-io pgrep
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
M=$((1024 * 1024)) N=200
cmds=()
for i in $(seq 0 511); do cmds+=(-c "write -P $((i % 250 + 1)) $((i * 2 * M)) 4k"); done
qemu-img create -q -f qcow2 -o cluster_size=4k "$T/proto.qcow2" 1G
qemu-io -f qcow2 "${cmds[@]}" "$T/proto.qcow2" >/dev/null
for i in $(seq -w 0 $((N - 1))); do cp "$T/proto.qcow2" "$SRC/b$i.qcow2"; done
qemu-img convert -O raw "$T/proto.qcow2" "$T/proto.raw"
want=$(sha256sum < "$T/proto.raw")

rss_mib() { echo $(( $(awk '/^VmRSS/ {print $2}' "/proc/$1/status") / 1024 )); }
# Reads 4 KiB every 2 MiB of each image: every L2 table of every image.
read_all() {
    "$PY" - "$MNT" "$N" <<'EOF'
import mmap, os, sys
mnt, n = sys.argv[1], int(sys.argv[2])
buf = mmap.mmap(-1, 4096)
for i in range(n):
    fd = os.open("%s/b%03d.qcow2/disk.raw" % (mnt, i), os.O_RDONLY | os.O_DIRECT)
    for j in range(512):
        os.preadv(fd, [buf], j * 2 * 1024 * 1024)
        if buf[0] != j % 250 + 1: sys.exit("b%03d: wrong byte at %d MiB" % (i, 2 * j))
    os.close(fd)
EOF
}
# wait_rss PID MIB WHAT: polls once a second, up to 20 s, for RSS < MIB.
wait_rss() {
    local r
    for _ in $(seq 20); do
        r=$(rss_mib "$1")
        (( r < $2 )) && { echo "   $3: RSS $r MiB (< $2)"; return 0; }
        sleep 1
    done
    fail "$3: RSS still $r MiB, not below $2 MiB after 20 s"
}

log "bad values are refused"
for o in cache_limit=lots cache_idle=0 cache_idle=-3 cache_idle=; do
    out=$("$IMGFS" mount -o "$o" "$SRC" "$MNT" 2>&1) && fail "-o $o was accepted"
    [[ $(wc -l <<< "$out") == 1 && $out == *"$o"* ]] || fail "-o $o: not one line naming it: $out"
done
echo "   refused, one line each"

log "nothing given back: the reads load the tables"
mount_imgfs "$SRC" "$MNT" -o cache_limit=1G,cache_idle=3600
pid=$(pgrep -f "imgfs mount .*$MNT" | head -1)
read_all || fail "an image read wrong"
held=$(rss_mib "$pid")
echo "   RSS $held MiB"
(( held >= 200 )) || fail "RSS was only $held MiB with nothing given back: the test does not load the caches it means to"
umount_imgfs "$MNT"

log "-o cache_limit=16M"
mount_imgfs "$SRC" "$MNT" -o cache_limit=16M,cache_idle=3600
pid=$(pgrep -f "imgfs mount .*$MNT" | head -1)
exec {early}< "$MNT/b000.qcow2/disk.raw"
read_all || fail "an image read wrong under the limit"
wait_rss "$pid" $((64 + 16)) "after reading all $N images"
[[ $(sha256sum <&$early) == "$want" ]] || fail "a descriptor opened before the caches went reads differently"
[[ $(sha256sum < "$MNT/b123.qcow2/disk.raw") == "$want" ]] || fail "an image reads differently after its caches went"
exec {early}<&-
echo "   old and new descriptors read as qemu"
umount_imgfs "$MNT"

log "-o cache_idle=2"
mount_imgfs "$SRC" "$MNT" -o cache_idle=2
pid=$(pgrep -f "imgfs mount .*$MNT" | head -1)
exec {early}< "$MNT/b007.qcow2/disk.raw"
read_all || fail "an image read wrong"
# The default limit (256M) would keep most of what was read; only the
# idle release takes RSS below 64 MiB.
wait_rss "$pid" 64 "idle"
[[ $(sha256sum <&$early) == "$want" ]] || fail "a descriptor opened before the idle release reads differently"
exec {early}<&-
read_all || fail "an image read wrong after the idle release"
echo "   every image reads again"
umount_imgfs "$MNT"
for i in 000 199; do check_clean "$SRC/b$i.qcow2"; done
echo "PASS"
