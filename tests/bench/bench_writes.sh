#!/usr/bin/env bash
# Writes: imgfs against qemu-storage-daemon's FUSE export, on the same
# files, in one run; medians over ROUNDS rounds, fresh images each.
# For each format in FORMATS, a fresh SIZE_GIB GiB image:
#   seq    WRITE_MIB written with 1 MiB writes, then fsync                  MiB/s
#   rand   then 4 KiB random writes, QD1, O_DIRECT, fio psync, for
#          RAND_RUNTIME s over the whole disk (half of it written: both
#          allocating writes and writes in place), then fsync             IOPS
# Images on tmpfs: the servers set the pace. Every image passes qemu-img
# check afterwards, and in the first round the sequential data reads back
# through qemu. Prints medians and the ratio imgfs / qsd, and the ceiling:
# the same dd straight into a tmpfs file, no FUSE, in the same rounds.
# Environment: FORMATS="qcow2 vmdk" ROUNDS=5 SIZE_GIB=1 WRITE_MIB=512
#   RAND_RUNTIME=4 IMGFS=... QSD=qemu-storage-daemon
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FORMATS=${FORMATS:-qcow2 vmdk}
ROUNDS=${ROUNDS:-5}
SIZE_GIB=${SIZE_GIB:-1}
WRITE_MIB=${WRITE_MIB:-512}
RAND_RUNTIME=${RAND_RUNTIME:-4}
IMGFS_BUILD=${IMGFS_BUILD:-$(cd "$HERE/../.." && pwd)/build}
IMGFS=${IMGFS:-$IMGFS_BUILD/mounttool/imgfs}
QSD=${QSD:-qemu-storage-daemon}
log() { printf '[bench_writes %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'bench_writes: ERROR: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "SKIP: needs root (FUSE mounts)"; exit 77; }
[[ -c /dev/fuse ]] || { echo "SKIP: /dev/fuse missing"; exit 77; }
for c in qemu-img fio python3 "$QSD" "$IMGFS"; do command -v "$c" >/dev/null || die "missing $c"; done

W=$(mktemp -d /dev/shm/imgfs-bench-writes.XXXXXX)
MNT=$W/mnt
mkdir -p "$W/w" "$MNT"
source "$HERE/serve_lib.sh"
trap serve_cleanup EXIT
head -c $((WRITE_MIB << 20)) /dev/urandom >"$W/write.bin"

writerand() {
  settle
  fio --name=w --filename="$DISK" --rw=randwrite --bs=4k --direct=1 --iodepth=1 --ioengine=psync \
    --runtime="$RAND_RUNTIME" --time_based --end_fsync=1 --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); print("%.0f" % json.loads(t[t.index("{"):])["jobs"][0]["write"]["iops"])'
}

declare -A R
add() { R[$1/$2]="${R[$1/$2]:-} $3"; }
for round in $(seq 1 "$ROUNDS"); do
  DISK=$W/w/plain.raw
  : >"$DISK"
  add ceiling-seq host "$(writeseq)"
  rm -f "$DISK"
  for fmt in $FORMATS; do
    for subj in imgfs qsd; do
      rm -f "$W"/w/*
      qemu-img create -q -f "$fmt" "$W/w/fresh.$fmt" "${SIZE_GIB}G"
      serve "$subj" "$W/w/fresh.$fmt" rw "$fmt"
      add "$fmt-seq" "$subj" "$(writeseq)"
      if [[ $round == 1 ]]; then  # what was written reads back through qemu (-U: still served)
        qemu-img dd -U -f "$fmt" -O raw if="$W/w/fresh.$fmt" of="$W/w/check.raw" bs=1M count="$WRITE_MIB" >/dev/null
        cmp -s "$W/w/check.raw" "$W/write.bin" || die "$subj: the $fmt written reads otherwise through qemu"
        rm -f "$W/w/check.raw"
      fi
      add "$fmt-rand" "$subj" "$(writerand)"
      unserve "$subj"
      qemu-img check -q "$W/w/fresh.$fmt" || die "$subj: qemu-img check of the $fmt failed after the writes"
      rm -f "$W"/w/*  # tmpfs as full as before the next measurement
    done
  done
  log "round $round done"
done

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
printf '%-11s %12s %12s %8s   (ROUNDS=%s, SIZE_GIB=%s, WRITE_MIB=%s, RAND_RUNTIME=%s)\n' metric imgfs qsd ratio \
  "$ROUNDS" "$SIZE_GIB" "$WRITE_MIB" "$RAND_RUNTIME"
for fmt in $FORMATS; do
  for m in seq rand; do
    # shellcheck disable=SC2086
    a=$(median ${R[$fmt-$m/imgfs]}) b=$(median ${R[$fmt-$m/qsd]})
    printf '%-11s %12s %12s %7.2fx\n' "$fmt-$m" "$a" "$b" "$(python3 -c "print($a / $b)")"
  done
done
c=$(median ${R[ceiling-seq/host]})
echo "ceiling: dd into a tmpfs file, no FUSE: $c MiB/s"
for fmt in $FORMATS; do
  # shellcheck disable=SC2086
  a=$(median ${R[$fmt-seq/imgfs]}) b=$(median ${R[$fmt-seq/qsd]})
  printf '  %s sequential, share of the ceiling: imgfs %.2f, qsd %.2f\n' "$fmt" \
    "$(python3 -c "print($a / $c)")" "$(python3 -c "print($b / $c)")"
done
echo "per round:"
for k in "${!R[@]}"; do echo "  $k:${R[$k]}"; done | sort
