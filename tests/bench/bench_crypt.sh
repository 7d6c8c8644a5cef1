#!/usr/bin/env bash
# Encrypted images: a 1 GiB aes-256-xts LUKS qcow2 (data runs and holes)
# read through imgfs's mount and through qemu-storage-daemon's FUSE export
# of the same file with the same secret, and converted to raw by
# `imgfs convert` and `qemu-img convert`; one run, medians over ROUNDS.
#   seq      sequential read, 1 MiB reads                         MiB/s
#   rand     4 KiB random reads, QD1, O_DIRECT, fio psync          IOPS
#   convert  convert to raw on tmpfs                               s (ratio: qemu-img / imgfs)
# Images on tmpfs: the servers and their decryption set the pace. The
# first round checks that both read the disk as it was written.
# Environment: ROUNDS=5 SIZE_GIB=1 RAND_RUNTIME=5 IMGFS=... QSD=qemu-storage-daemon
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROUNDS=${ROUNDS:-5}
SIZE_GIB=${SIZE_GIB:-1}
RAND_RUNTIME=${RAND_RUNTIME:-5}
IMGFS_BUILD=${IMGFS_BUILD:-$(cd "$HERE/../.." && pwd)/build}
IMGFS=${IMGFS:-$IMGFS_BUILD/mounttool/imgfs}
QSD=${QSD:-qemu-storage-daemon}
log() { printf '[bench_crypt %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'bench_crypt: ERROR: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || { echo "SKIP: needs root (FUSE mounts)"; exit 77; }
[[ -c /dev/fuse ]] || { echo "SKIP: /dev/fuse missing"; exit 77; }
for c in qemu-img fio python3 "$QSD" "$IMGFS"; do command -v "$c" >/dev/null || die "missing $c"; done

W=$(mktemp -d /dev/shm/imgfs-bench-crypt.XXXXXX)
MNT=$W/mnt
mkdir -p "$W/img" "$W/keys" "$MNT"
source "$HERE/serve_lib.sh"
trap serve_cleanup EXIT
SIZE=$((SIZE_GIB << 30))
PASS=bench-secret
SEC=(--object "secret,id=sec0,data=$PASS")
OPTS="driver=qcow2,file.filename=$W/img/enc.qcow2,encrypt.key-secret=sec0"

log "making a ${SIZE_GIB} GiB aes-256-xts LUKS qcow2 of data runs and holes"
python3 "$HERE/make_disk.py" "$W/img/src.raw" "$SIZE" 1 text
for try in $(seq 1 30); do  # qemu's PBKDF2 timing fails now and then ("Unable to get accurate CPU usage")
  qemu-img convert "${SEC[@]}" -f raw -O qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=100 \
    "$W/img/src.raw" "$W/img/enc.qcow2" 2>/dev/null && break
  rm -f "$W/img/enc.qcow2"
done
[[ -f $W/img/enc.qcow2 ]] || die "qemu-img could not make the encrypted image"
printf '%s' "$PASS" >"$W/keys/enc.qcow2.key"

serve_enc() {
  if [[ $1 == imgfs ]]; then
    "$IMGFS" mount -r -o keydir="$W/keys" --log "$W/imgfs.log" "$W/img" "$MNT" || die "imgfs mount"
    DISK=$MNT/enc.qcow2/disk.raw
  else
    : >"$W/qsd.disk"
    rm -f "$W/qsd.pid"
    "$QSD" --daemonize --pidfile "$W/qsd.pid" "${SEC[@]}" \
      --blockdev "driver=file,node-name=f,filename=$W/img/enc.qcow2" \
      --blockdev "driver=qcow2,node-name=v,file=f,encrypt.format=luks,encrypt.key-secret=sec0" \
      --export "type=fuse,id=e,node-name=v,mountpoint=$W/qsd.disk,writable=off" >"$W/qsd.log" 2>&1 ||
      die "qsd: $(cat "$W/qsd.log")"
    DISK=$W/qsd.disk
  fi
  local i
  for i in $(seq 1 500); do [[ $(stat -c %s "$DISK" 2>/dev/null) -gt 0 ]] && return 0; sleep 0.01; done
  die "$1: $DISK never appeared"
}
convert_time() {  # TOOL: seconds to convert the image to raw on tmpfs
  local t0 t1
  rm -f "$W/out.raw"
  settle
  t0=$(date +%s%N)
  "$1" convert "${SEC[@]}" --image-opts "$OPTS" -O raw "$W/out.raw" || die "$1 convert"
  t1=$(date +%s%N)
  python3 -c "print('%.3f' % (($t1 - $t0) / 1e9))"
}

declare -A R
add() { R[$1/$2]="${R[$1/$2]:-} $3"; }
for round in $(seq 1 "$ROUNDS"); do
  for subj in imgfs qsd; do
    serve_enc "$subj"
    if [[ $round == 1 ]]; then cmp -s "$DISK" "$W/img/src.raw" || die "$subj: the encrypted disk reads wrong"; fi
    add seq "$subj" "$(seqread)"
    add rand "$subj" "$(randread)"
    unserve "$subj"
  done
  for tool in "$IMGFS" qemu-img; do
    name=$([[ $tool == qemu-img ]] && echo qemu-img || echo imgfs)
    add convert "$name" "$(convert_time "$tool")"
    if [[ $round == 1 ]]; then cmp -s "$W/out.raw" "$W/img/src.raw" || die "$name convert: wrong output"; fi
    rm -f "$W/out.raw"
  done
  log "round $round done"
done

median() { python3 -c 'import statistics,sys; print(statistics.median(float(x) for x in sys.argv[1:]))' "$@"; }
printf '%-8s %12s %12s %8s   (ROUNDS=%s, SIZE_GIB=%s, RAND_RUNTIME=%s)\n' metric imgfs anchor ratio "$ROUNDS" "$SIZE_GIB" "$RAND_RUNTIME"
for m in seq rand; do
  # shellcheck disable=SC2086
  a=$(median ${R[$m/imgfs]}) b=$(median ${R[$m/qsd]})
  printf '%-8s %12s %12s %7.2fx   (anchor: qsd)\n' "$m" "$a" "$b" "$(python3 -c "print($a / $b)")"
done
# shellcheck disable=SC2086
a=$(median ${R[convert/imgfs]}) b=$(median ${R[convert/qemu-img]})
printf '%-8s %12s %12s %7.2fx   (anchor: qemu-img; seconds, ratio qemu-img / imgfs)\n' convert "$a" "$b" \
  "$(python3 -c "print($b / $a)")"
echo "per round:"
for k in "${!R[@]}"; do echo "  $k:${R[$k]}"; done | sort
