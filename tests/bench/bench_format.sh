#!/usr/bin/env bash
# A format's benchmark (FORMAT=vmdk or vhdx; bench_vmdk.sh, bench_vhdx.sh):
# imgfs against qemu-storage-daemon's FUSE export, on the same files, in one
# run; medians over ROUNDS rounds, fresh mounts each.
#   seq-sparse   sequential read of a 1 GiB sparse disk (vmdk: monolithicSparse, vhdx:
#                dynamic; data runs and holes), 1 MiB reads                                     MiB/s
#   seq-stream   vmdk only: the same disk as streamOptimized (compressed grains)                MiB/s
#   rand-sparse  4 KiB random reads, QD1, O_DIRECT, fio psync, on the sparse disk              IOPS
#   write-sparse 1 MiB sequential writes of WRITE_MIB into a fresh sparse disk + fsync         MiB/s
# The image files live on tmpfs (these VMs page out an idle page-cache page
# within a second): the FUSE servers set the pace, not the host disk.
# Prints each metric's medians and the ratio imgfs / qsd.
# Environment: FORMAT=vmdk ROUNDS=5 SIZE_GIB=1 WRITE_MIB=512 RAND_RUNTIME=5 IMGFS=... QSD=qemu-storage-daemon
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
FORMAT=${FORMAT:-vmdk}
[[ $FORMAT == vmdk || $FORMAT == vhdx ]] || { echo "FORMAT is vmdk or vhdx" >&2; exit 2; }
ROUNDS=${ROUNDS:-5}
SIZE_GIB=${SIZE_GIB:-1}
WRITE_MIB=${WRITE_MIB:-512}
RAND_RUNTIME=${RAND_RUNTIME:-5}
IMGFS_BUILD=${IMGFS_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build}
IMGFS=${IMGFS:-$IMGFS_BUILD/mounttool/imgfs}
QSD=${QSD:-qemu-storage-daemon}
log() { printf '[bench_%s %s] %s\n' "$FORMAT" "$(date +%T)" "$*" >&2; }
die() { printf 'bench_%s: ERROR: %s\n' "$FORMAT" "$*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "SKIP: needs root (FUSE mounts)"; exit 77; }
[[ -c /dev/fuse ]] || { echo "SKIP: /dev/fuse missing"; exit 77; }
for c in qemu-img qemu-io fio python3 "$QSD" "$IMGFS"; do command -v "$c" >/dev/null || die "missing $c"; done

W=$(mktemp -d /dev/shm/imgfs-bench-$FORMAT.XXXXXX)
MNT=$W/mnt
mkdir -p "$W/img" "$W/w" "$MNT"
source "$HERE/serve_lib.sh"
trap serve_cleanup EXIT
SIZE=$((SIZE_GIB << 30))

log "making a ${SIZE_GIB} GiB $FORMAT disk of data runs and holes"
python3 "$HERE/make_disk.py" "$W/img/src.raw" "$SIZE" 1 text
SPARSE=$W/img/sparse.$FORMAT
qemu-img convert -f raw -O "$FORMAT" "$W/img/src.raw" "$SPARSE"
METRICS="seq-sparse rand-sparse write-sparse"
if [[ $FORMAT == vmdk ]]; then
  qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$W/img/src.raw" "$W/img/stream.vmdk"
  METRICS="seq-sparse seq-stream rand-sparse write-sparse"
fi
head -c $((WRITE_MIB << 20)) /dev/urandom >"$W/write.bin"


declare -A R
add() { R[$1/$2]="${R[$1/$2]:-} $3"; }
for round in $(seq 1 "$ROUNDS"); do
  for subj in imgfs qsd; do
    serve "$subj" "$SPARSE" ro
    if [[ $round == 1 ]]; then cmp -s "$DISK" "$W/img/src.raw" || die "$subj: the sparse disk reads wrong"; fi
    add seq-sparse "$subj" "$(seqread)"
    add rand-sparse "$subj" "$(randread)"
    unserve "$subj"
    if [[ $FORMAT == vmdk ]]; then
      serve "$subj" "$W/img/stream.vmdk" ro
      if [[ $round == 1 ]]; then cmp -s "$DISK" "$W/img/src.raw" || die "$subj: the stream disk reads wrong"; fi
      add seq-stream "$subj" "$(seqread)"
      unserve "$subj"
    fi
    rm -f "$W"/w/*
    qemu-img create -q -f "$FORMAT" "$W/w/fresh.$FORMAT" "${SIZE_GIB}G"
    serve "$subj" "$W/w/fresh.$FORMAT" rw
    add write-sparse "$subj" "$(writeseq)"
    unserve "$subj"
    qemu-img check -q "$W/w/fresh.$FORMAT" || die "$subj: qemu-img check failed after the writes"
    if [[ $round == 1 ]]; then  # what was written reads back through qemu
      qemu-img dd -f "$FORMAT" -O raw if="$W/w/fresh.$FORMAT" of="$W/w/check.raw" bs=1M count="$WRITE_MIB" >/dev/null
      cmp -s "$W/w/check.raw" "$W/write.bin" || die "$subj: the written disk reads otherwise through qemu"
    fi
    # Leave tmpfs as full as before: reads measured right after a GiB more
    # of tmpfs ran at half speed here, for either server.
    rm -f "$W"/w/*
  done
  log "round $round done"
done

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
printf '%-13s %12s %12s %8s   (ROUNDS=%s, SIZE_GIB=%s, WRITE_MIB=%s)\n' metric imgfs qsd ratio "$ROUNDS" "$SIZE_GIB" "$WRITE_MIB"
for m in $METRICS; do
  # shellcheck disable=SC2086
  a=$(median ${R[$m/imgfs]}) b=$(median ${R[$m/qsd]})
  printf '%-13s %12s %12s %7.2fx\n' "$m" "$a" "$b" "$(python3 -c "print($a / $b)")"
done
echo "per round:"
for m in $METRICS; do
  printf '  %-13s imgfs%s   qsd%s\n' "$m" "${R[$m/imgfs]}" "${R[$m/qsd]}"
done
