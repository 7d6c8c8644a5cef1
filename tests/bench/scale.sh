#!/usr/bin/env bash
# How imgfs's costs grow with what a library holds, on tmpfs, in one run;
# medians of ROUNDS rounds, each growth printed as a ratio:
#   images      mount until listed, and ls -l of every image directory
#               (find -ls), for each count in IMAGES (small qcow2 copies) ms
#   snapshots   ls -l of snapshots/ for each count in SNAPS (one qcow2) ms
#   chains      fio 4 KiB random reads, QD1, O_DIRECT, over 64 MiB of data
#               at the bottom of chains of each length in CHAINS      IOPS
#   jobs        fio 4 KiB random reads, QD1, O_DIRECT, total IOPS with
#               each count in JOBS, on a 1 GiB qcow2 (half data)        IOPS
#   umount      imgfs umount of a read-write mount of one image         ms
# Chains and jobs run on qemu-storage-daemon's FUSE export too (one
# process serves one image: the rows with many images have no qsd).
# Once, after the rounds:
#   huge        mount until listed and ls -l of the root for HUGE images ms
#   memory      the daemon's RSS after find and a 4 KiB read of every
#               disk.raw over the largest of IMAGES, and again after
#               IDLE seconds (-o cache_idle=IDLE)                      MiB
# Environment: ROUNDS=5 IMAGES="1000 10000" SNAPS="1 100 1000 10000"
#   CHAINS="1 64 1000" JOBS="1 2 4 8" HUGE=100000 IDLE=10 RAND_RUNTIME=4
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROUNDS=${ROUNDS:-5}
IMAGES=${IMAGES:-1000 10000}
SNAPS=${SNAPS:-1 100 1000 10000}
CHAINS=${CHAINS:-1 64 1000}
HUGE=${HUGE-100000}
IDLE=${IDLE:-10}
JOBS=${JOBS:-1 2 4 8}
RAND_RUNTIME=${RAND_RUNTIME:-4}
IMGFS_BUILD=${IMGFS_BUILD:-$(cd "$HERE/../.." && pwd)/build}
IMGFS=${IMGFS:-$IMGFS_BUILD/mounttool/imgfs}
log() { printf '[scale %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'scale: ERROR: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "SKIP: needs root (FUSE mounts)"; exit 77; }
[[ -c /dev/fuse ]] || { echo "SKIP: /dev/fuse missing"; exit 77; }
for c in qemu-img fio python3 "$IMGFS" "${QSD:-qemu-storage-daemon}"; do command -v "$c" >/dev/null || die "missing $c"; done

W=$(mktemp -d /dev/shm/imgfs-scale.XXXXXX)
MNT=$W/mnt
mkdir -p "$MNT"
QSD=${QSD:-qemu-storage-daemon}
source "$HERE/serve_lib.sh"
trap serve_cleanup EXIT
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
declare -A R
add() { R[$1]="${R[$1]:-} $2"; }
median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }

log "making the images"
qemu-img create -q -f qcow2 -o cluster_size=4k "$W/proto.qcow2" 16M
for n in $IMAGES $HUGE; do
  mkdir -p "$W/lib$n"
  python3 - "$W/proto.qcow2" "$W/lib$n" "$n" <<'EOF'
import shutil, sys
src, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    shutil.copyfile(src, "%s/img%06d.qcow2" % (d, i))
EOF
done
for n in $SNAPS; do
  mkdir -p "$W/snap$n"
  qemu-img create -q -f qcow2 "$W/snap$n/x.qcow2" 64M
  qemu-img snapshot -c s0 "$W/snap$n/x.qcow2"
  # qemu-img makes the first 1,000 (each takes it longer: 0.15 s at
  # 1,000), imgfs the rest; qemu then counts them all.
  python3 - "$W/snap$n/x.qcow2" "$n" "$IMGFS" <<'EOF'
import subprocess, sys
img, n, imgfs = sys.argv[1], int(sys.argv[2]), sys.argv[3]
for i in range(1, n):
    subprocess.run(["qemu-img" if i < 1000 else imgfs, "snapshot", "-c", "s%d" % i, img], check=True)
EOF
  got=$(qemu-img snapshot -l "$W/snap$n/x.qcow2" | grep -c '^[0-9]')
  [[ $got == "$n" ]] || die "qemu lists $got snapshots where $n were made"
  qemu-img check -q "$W/snap$n/x.qcow2" || die "qemu-img check of the $n-snapshot image"
done
# A chain of n files: a 64 MiB base with its data, and overlays copied
# from one qemu-img made, their backing names changed (one length).
qemu-img create -q -f qcow2 "$W/base.qcow2" 64M
qemu-io -f qcow2 -c "write -P 0x11 0 64M" "$W/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -u -b l00000.qcow2 -F qcow2 "$W/overlay.qcow2" 64M
for n in $CHAINS; do
  mkdir -p "$W/chain$n"
  cp "$W/base.qcow2" "$W/chain$n/l00000.qcow2"
  python3 - "$W/overlay.qcow2" "$W/chain$n" "$n" <<'EOF'
import sys
tpl, d, n = open(sys.argv[1], "rb").read(), sys.argv[2], int(sys.argv[3])
for i in range(1, n):
    with open("%s/l%05d.qcow2" % (d, i), "wb") as f:
        f.write(tpl.replace(b"l00000.qcow2", b"l%05d.qcow2" % (i - 1)))
EOF
done
mkdir -p "$W/disk"
python3 "$HERE/make_disk.py" "$W/src.raw" $((1 << 30)) 1 text
qemu-img convert -f raw -O qcow2 "$W/src.raw" "$W/disk/d.qcow2"
rm -f "$W/src.raw"

# randread FILE JOBS: total IOPS of 4 KiB random reads at QD1
randread() {
  fio --name=r --filename="$1" --rw=randread --bs=4k --direct=1 --iodepth=1 \
    --ioengine=psync --numjobs="$2" --group_reporting --runtime="$RAND_RUNTIME" --time_based \
    --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); print("%.0f" % json.loads(t[t.index("{"):])["jobs"][0]["read"]["iops"])'
}
rss_mib() { echo $(( $(awk '/^VmRSS/ {print $2}' "/proc/$1/status") / 1024 )); }

for round in $(seq 1 "$ROUNDS"); do
  for n in $IMAGES; do
    t0=$(date +%s%N)
    "$IMGFS" mount -r "$W/lib$n" "$MNT" || die "mount of $n images"
    [[ $(ls "$MNT" | wc -l) == "$n" ]] || die "$n images: $(ls "$MNT" | wc -l) listed"
    add "mount/$n" "$(ms_since "$t0")"
    t0=$(date +%s%N)
    find "$MNT" -mindepth 1 -maxdepth 2 -ls >/dev/null
    add "lsl/$n" "$(ms_since "$t0")"
    "$IMGFS" umount "$MNT"
  done
  for n in $CHAINS; do
    top=$(printf 'l%05d.qcow2' $((n - 1)))
    "$IMGFS" mount -r "$W/chain$n/$top" "$MNT"
    add "chain/$n" "$(randread "$MNT/$top/disk.raw" 1)"
    "$IMGFS" umount "$MNT"
    serve qsd "$W/chain$n/$top" ro qcow2
    add "qsd-chain/$n" "$(randread "$DISK" 1)"
    unserve qsd
  done
  for n in $SNAPS; do
    "$IMGFS" mount -r "$W/snap$n" "$MNT"
    ls "$MNT/x.qcow2" >/dev/null
    t0=$(date +%s%N)
    got=$(ls -l "$MNT/x.qcow2/snapshots" | grep -c '\.raw$')
    add "snaps/$n" "$(ms_since "$t0")"
    [[ $got == "$n" ]] || die "$n snapshots: $got listed"
    "$IMGFS" umount "$MNT"
  done
  "$IMGFS" mount -r "$W/disk" "$MNT"
  for j in $JOBS; do
    add "jobs/$j" "$(randread "$MNT/d.qcow2/disk.raw" "$j")"
  done
  "$IMGFS" umount "$MNT"
  serve qsd "$W/disk/d.qcow2" ro qcow2
  for j in $JOBS; do
    add "qsd-jobs/$j" "$(randread "$DISK" "$j")"
  done
  unserve qsd
  "$IMGFS" mount "$W/disk" "$MNT"
  cat "$MNT/d.qcow2/info.json" >/dev/null
  t0=$(date +%s%N)
  "$IMGFS" umount "$MNT"
  add umount "$(ms_since "$t0")"
  log "round $round done"
done

if [[ -n $HUGE ]]; then
  log "$HUGE images"
  t0=$(date +%s%N)
  "$IMGFS" mount -r "$W/lib$HUGE" "$MNT" || die "mount of $HUGE images"
  [[ $(ls "$MNT" | wc -l) == "$HUGE" ]] || die "$HUGE images: $(ls "$MNT" | wc -l) listed"
  huge_mount=$(ms_since "$t0")
  t0=$(date +%s%N)
  ls -l "$MNT" >/dev/null
  huge_ls=$(ms_since "$t0")
  "$IMGFS" umount "$MNT"
fi
big=$(for n in $IMAGES; do echo "$n"; done | sort -n | tail -1)
log "memory over $big images"
"$IMGFS" mount -r -o cache_idle="$IDLE" "$W/lib$big" "$MNT"
pid=$(pgrep -f "imgfs mount .*$MNT" | head -1)
find "$MNT" >/dev/null
python3 - "$MNT" <<'EOF'
import os, sys
for d in os.listdir(sys.argv[1]):
    with open(os.path.join(sys.argv[1], d, "disk.raw"), "rb") as f:
        f.read(4096)
EOF
rss_walk=$(rss_mib "$pid")
sleep $((IDLE + 2))
rss_idle=$(rss_mib "$pid")
"$IMGFS" umount "$MNT"

# row LABEL KEY... : the medians, and each one's ratio to the first
row() {
  local label=$1 first="" m k out=""
  shift
  for k in "$@"; do
    # shellcheck disable=SC2086
    m=$(median ${R[$k]})
    [[ -n $first ]] || first=$m
    out+=$(printf ' %s=%s (%.2fx)' "${k#*/}" "$m" "$(python3 -c "print($m / $first)")")
  done
  echo "$label:$out"
}
echo "medians of $ROUNDS rounds; (x) = ratio to the first column"
# shellcheck disable=SC2046
row "mount until listed [ms], by images" $(for n in $IMAGES; do echo "mount/$n"; done)
# shellcheck disable=SC2046
row "ls -l of every image directory [ms]" $(for n in $IMAGES; do echo "lsl/$n"; done)
# shellcheck disable=SC2046
row "ls -l snapshots/ [ms], by snapshots" $(for n in $SNAPS; do echo "snaps/$n"; done)
# shellcheck disable=SC2046
row "4 KiB random reads [IOPS], by chain length" $(for n in $CHAINS; do echo "chain/$n"; done)
# shellcheck disable=SC2046
row "  qsd, the same" $(for n in $CHAINS; do echo "qsd-chain/$n"; done)
# shellcheck disable=SC2046
row "4 KiB random reads [IOPS], by fio jobs" $(for j in $JOBS; do echo "jobs/$j"; done)
# shellcheck disable=SC2046
row "  qsd, the same" $(for j in $JOBS; do echo "qsd-jobs/$j"; done)
[[ -z $HUGE ]] || echo "$HUGE images: mount until listed $huge_mount ms, ls -l of the root $huge_ls ms"
echo "daemon RSS over $big images: after find and a read of each $rss_walk MiB, ${IDLE} s later $rss_idle MiB"
echo "imgfs umount of a read-write mount [ms]: $(median ${R[umount]})"
echo "per round:"
for k in "${!R[@]}"; do echo "  $k:${R[$k]}"; done | sort
