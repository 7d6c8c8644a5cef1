#!/usr/bin/env bash
# imgfs performance benchmark: imgfs vs qemu-storage-daemon (FUSE export) vs
# a bare splice-based FUSE server (ceiling_fuse.cpp) serving the same data.
#
# Metrics (medians over ROUNDS rounds, fresh mounts every round):
#   (a) sequential read of the whole disk, 1 MiB reads         MiB/s  (higher = better)
#       cold (caches dropped: the host disk sets the pace) and
#   (a') in memory: the image file on tmpfs, fresh mount, so the FUSE server
#       sets the pace; (h)/(h') the same on a zstd-compressed qcow2.
#       Not "the page cache after cat": these VMs run DAMON proactive reclaim
#       (paddr pageout of pages idle for ~1 s), which evicts a file read a
#       moment ago while it is being read again; tmpfs pages stay.
#   (b) 4 KiB random reads, O_DIRECT, QD1, fio psync           IOPS   (higher = better)
#       once with the host cache dropped (cold), then (b') with the image
#       file in memory (tmpfs)
#   (c) sequential 1 MiB writes of WRITE_MIB into a fresh empty
#       qcow2 + fsync, wall clock incl. the fsync              MiB/s  (higher = better)
#   (d) mount time of a directory of NIMAGES small qcow2 images ms    (lower = better)
#   (e) daemon VmRSS after `ls -l MNT/*/` on all of them        MiB   (lower = better)
#   plus, for free from the read mounts:
#   (f) single-image mount latency (start -> disk readable)     ms    (lower = better)
#   (g) daemon VmRSS after the sequential read of one image     MiB   (lower = better)
# Caches are dropped (sync; echo 3 > /proc/sys/vm/drop_caches) before every
# measured read.  (d)/(e) exist only for imgfs (qsd/ceiling have no directory
# mode) and are reported as n/a for the others.
#
# Environment:
#   ROUNDS=5          rounds (median is taken over them)
#   SIZE_GIB=1        virtual size of the benchmark image (GiB, integer)
#   WRITE_MIB=        MiB written in (c); default SIZE_GIB*512
#   RAND_RUNTIME=10   seconds of random reads per subject per round
#   NIMAGES=1000      images in the directory for (d)/(e); 0 disables (d)/(e)
#   SUBJECTS="imgfs qsd ceiling"
#   IMGFS=            imgfs binary (default $IMGFS_BUILD/mounttool/imgfs,
#                     IMGFS_BUILD default /work/main/build)
#   CEILING_FUSE=     ceiling_fuse binary (default: imgfs_ceiling_fuse found in
#                     $IMGFS_BUILD, else compiled from ceiling_fuse.cpp with g++)
#   QSD=qemu-storage-daemon
#   BENCH_WORKDIR=    parent dir for the scratch dir (default /var/tmp)
#   KEEP_WORKDIR=0    1 = do not delete the scratch dir
#   SEED=1            seed for the image layout
# Quick smoke check:
#   ROUNDS=1 SIZE_GIB=1 WRITE_MIB=64 RAND_RUNTIME=2 NIMAGES=50 SUBJECTS="qsd ceiling" tests/bench/bench.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

ROUNDS="${ROUNDS:-5}"
SIZE_GIB="${SIZE_GIB:-1}"
WRITE_MIB="${WRITE_MIB:-$((SIZE_GIB * 512))}"
RAND_RUNTIME="${RAND_RUNTIME:-10}"
NIMAGES="${NIMAGES:-1000}"
SUBJECTS="${SUBJECTS:-imgfs qsd ceiling}"
IMGFS_BUILD="${IMGFS_BUILD:-/work/main/build}"
IMGFS="${IMGFS:-$IMGFS_BUILD/mounttool/imgfs}"
QSD="${QSD:-qemu-storage-daemon}"
BENCH_WORKDIR="${BENCH_WORKDIR:-/var/tmp}"
KEEP_WORKDIR="${KEEP_WORKDIR:-0}"
SEED="${SEED:-1}"
READY_TIMEOUT=60   # seconds to wait for any mount to become usable

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'bench: ERROR: %s\n' "$*" >&2; exit 1; }
skip() { printf 'SKIP: %s\n' "$*"; exit 77; }
now_ns() { date +%s%N; }
has_subject() { [[ " $SUBJECTS " == *" $1 "* ]]; }

# ---------------------------------------------------------------- preflight
[[ "$(id -u)" == 0 ]] || skip "must run as root (drop_caches, FUSE mounts)"
[[ -c /dev/fuse ]] || skip "/dev/fuse missing"
for c in qemu-img qemu-io fio python3 dd stat fusermount3; do
  command -v "$c" >/dev/null || skip "missing command: $c"
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer"
[[ "$SIZE_GIB" =~ ^[1-9][0-9]*$ ]] || die "SIZE_GIB must be a positive integer"
[[ "$WRITE_MIB" =~ ^[1-9][0-9]*$ ]] || die "WRITE_MIB must be a positive integer"
(( WRITE_MIB <= SIZE_GIB * 1024 )) || die "WRITE_MIB larger than the image"
for s in $SUBJECTS; do
  case "$s" in imgfs|qsd|ceiling) ;; *) die "unknown subject '$s' (imgfs qsd ceiling)";; esac
done
if has_subject imgfs; then
  [[ -x "$IMGFS" ]] || die "imgfs binary not found at '$IMGFS' (set IMGFS=, or SUBJECTS=\"qsd ceiling\")"
fi
if has_subject qsd; then
  command -v "$QSD" >/dev/null || die "$QSD not found (or drop qsd from SUBJECTS)"
fi

DROP_CACHES_OK=1
if ! { sync && echo 3 > /proc/sys/vm/drop_caches; } 2>/dev/null; then
  DROP_CACHES_OK=0
  log "WARNING: cannot write /proc/sys/vm/drop_caches; reads may be served from cache"
fi
drop_caches() {
  sync
  if [[ "$DROP_CACHES_OK" == 1 ]]; then echo 3 > /proc/sys/vm/drop_caches; fi
}

SIZE_BYTES=$((SIZE_GIB * 1024 * 1024 * 1024))
need_kib=$(( (SIZE_GIB * 1024 + WRITE_MIB * 2 + NIMAGES / 2 + 512) * 1024 ))
avail_kib=$(df -Pk "$BENCH_WORKDIR" | awk 'NR==2 {print $4}')
(( avail_kib > need_kib )) || die "need ~$((need_kib / 1024)) MiB free in $BENCH_WORKDIR, have $((avail_kib / 1024)) MiB"

W="$(mktemp -d "$BENCH_WORKDIR/imgfs-bench.XXXXXX")"
# absolute paths everywhere: qsd --daemonize chdirs to / and then fails to
# unmount a relative mountpoint on exit, leaving a dead FUSE mount behind
W="$(cd "$W" && pwd -P)"
RES="$W/results"
mkdir -p "$RES" "$W/ro" "$W/ref" "$W/rw" "$W/mnt" "$W/many" "$W/log"

# ---------------------------------------------------------------- cleanup
PIDS=()   # daemons we started (qsd, ceiling, imgfs)
cleanup() {
  local rc=$? m p
  set +e
  # unmount everything under the scratch dir, deepest first
  for m in $(awk -v w="$W" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r); do
    if [[ -n "${IMGFS_MOUNTS[$m]:-}" && -x "$IMGFS" ]]; then
      timeout 30 "$IMGFS" umount "$m" >/dev/null 2>&1
    fi
    if grep -q " $m " /proc/mounts; then
      fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
    fi
  done
  for p in "${PIDS[@]}"; do
    [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null
  done
  sleep 0.5
  for p in "${PIDS[@]}"; do
    [[ -n "$p" ]] && kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
  done
  [[ -n "${SHM:-}" ]] && rm -rf "$SHM"
  if [[ "$KEEP_WORKDIR" == 1 ]]; then
    log "scratch dir kept: $W"
  else
    rm -rf "$W"
  fi
  exit "$rc"
}
declare -A IMGFS_MOUNTS=()
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# wait_for CMD... : poll until CMD succeeds (10 ms steps), die after READY_TIMEOUT
wait_for() {
  local deadline=$(( $(date +%s) + READY_TIMEOUT ))
  until "$@"; do
    (( $(date +%s) < deadline )) || return 1
    sleep 0.01
  done
}
size_is() { [[ "$(stat -c %s "$1" 2>/dev/null)" == "$2" ]]; }
# gone = no such process, or a zombie (kill -0 succeeds on zombies, and a
# daemonized qsd may be reparented to a pid 1 that does not reap)
pid_gone() {
  kill -0 "$1" 2>/dev/null || return 0
  [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" == Z ]]
}
not_mounted() { ! awk -v m="$1" '$2 == m {f=1} END {exit !f}' /proc/mounts; }
rss_mib() { awk '/^VmRSS:/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

record() {  # record METRIC SUBJECT VALUE
  echo "$3" >> "$RES/$1.$2"
}

# ---------------------------------------------------------------- ceiling binary
CEIL_BIN=""
if has_subject ceiling; then
  if [[ -n "${CEILING_FUSE:-}" ]]; then
    CEIL_BIN="$CEILING_FUSE"
  elif [[ -d "$IMGFS_BUILD" ]]; then
    CEIL_BIN="$(find "$IMGFS_BUILD" -type f -name imgfs_ceiling_fuse -perm -u+x 2>/dev/null | head -n1)"
  fi
  if [[ -z "$CEIL_BIN" ]]; then
    command -v g++ >/dev/null && command -v pkg-config >/dev/null || die "no ceiling binary and no g++/pkg-config to build it"
    CEIL_BIN="$W/ceiling_fuse"
    log "compiling ceiling_fuse.cpp -> $CEIL_BIN"
    # shellcheck disable=SC2046
    g++ -O2 -std=c++17 "$HERE/ceiling_fuse.cpp" $(pkg-config --cflags --libs fuse3) -o "$CEIL_BIN"
  fi
  [[ -x "$CEIL_BIN" ]] || die "ceiling binary '$CEIL_BIN' not executable"
fi

# ---------------------------------------------------------------- images
IMG="$W/ro/bench.qcow2"    # imgfs names the directory after the file: bench.qcow2/
ZIMG="$W/zro/bench.qcow2"  # a disk of text-like data, every cluster zstd-compressed
ZRAW="$W/zro/bench.raw"    # its content
REF_RAW="$W/ref/bench.raw" # qemu-img convert -O raw of IMG, served by the ceiling
SRC="$W/ref/write-src.bin" # random data written in (c)

make_bench_image() {
  log "creating ${SIZE_GIB} GiB qcow2 with mixed data and holes"
  qemu-img create -q -f qcow2 "$IMG" "${SIZE_GIB}G"
  # Layout: the disk is cut into runs of 1-16 x 4 MiB; each run is data or
  # hole with p=0.5 (so ~half the clusters are allocated, in large runs).
  # Hole runs get an occasional lone 64 KiB write so the map is not only
  # large extents.  Runs are written in shuffled order so the host layout is
  # not simply sequential.  Each run has its own byte pattern.
  local cmds
  cmds="$(python3 - "$SIZE_BYTES" "$SEED" <<'EOF'
import random, sys
size, seed = int(sys.argv[1]), int(sys.argv[2])
rnd = random.Random(seed)
chunk = 4 << 20
n = size // chunk
ops, i = [], 0
while i < n:
    run = min(rnd.randint(1, 16), n - i)
    if rnd.random() < 0.5:
        ops.append((i * chunk, run * chunk))
    else:
        for j in range(run):
            if rnd.random() < 0.25:
                off = (i + j) * chunk + rnd.randrange(0, chunk // 65536) * 65536
                ops.append((off, 65536))
    i += run
rnd.shuffle(ops)
for off, ln in ops:
    print("write -P %d %d %d" % (rnd.randint(1, 255), off, ln))
EOF
)"
  local args=() line
  while IFS= read -r line; do args+=(-c "$line"); done <<< "$cmds"
  qemu-io -f qcow2 "${args[@]}" "$IMG" >/dev/null
  qemu-img convert -f qcow2 -O raw "$IMG" "$REF_RAW"
  local alloc
  alloc="$(qemu-img map -f qcow2 --output=json "$IMG" | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["data"]))')"
  log "image: $((alloc / 1048576)) MiB of $((SIZE_BYTES / 1048576)) MiB allocated, $(wc -l <<< "$cmds") write runs"
}

make_many_images() {
  log "creating $NIMAGES small qcow2 images"
  qemu-img create -q -f qcow2 "$W/proto.qcow2" 16M
  python3 - "$W/proto.qcow2" "$W/many" "$NIMAGES" <<'EOF'
import shutil, sys
src, d, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for i in range(n):
    shutil.copyfile(src, "%s/img%04d.qcow2" % (d, i))
EOF
}

# ---------------------------------------------------------------- subjects
# start_subject SUBJ ro|rw IMAGE_OR_DIR
#   sets DISK (path of the guest-visible disk file), SPID (daemon pid),
#   READY_MS (start -> disk has its full size), MNT (what to unmount)
imgfs_pid_for() {  # pid of the imgfs daemon serving mountpoint $1
  local want p exe
  want="$(readlink -f "$IMGFS")"
  # preferred: a process running the imgfs binary with the mountpoint in argv
  for p in $(pgrep -f -- "$1" || true); do
    exe="$(readlink -f "/proc/$p/exe" 2>/dev/null || true)"
    if [[ "$exe" == "$want" ]]; then echo "$p"; return 0; fi
  done
  # fallback (e.g. IMGFS is a wrapper script): "... mount ... MOUNTPOINT"
  p="$(pgrep -f -- "mount .*$1\$" | head -n1 || true)"
  [[ -n "$p" ]] && { echo "$p"; return 0; }
  return 1
}

start_subject() {
  local subj="$1" mode="$2" src="$3" t0 vsize
  vsize="$(qemu-img info -U --output=json "$src" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')"
  case "$subj" in
    imgfs)
      MNT="$W/mnt/imgfs"
      mkdir -p "$MNT"
      local ro=()
      [[ "$mode" == ro ]] && ro=(-r)
      t0=$(now_ns)
      "$IMGFS" mount "${ro[@]}" --log "$W/log/imgfs.log" "$(dirname "$src")" "$MNT" \
        || die "imgfs mount failed (see $W/log/imgfs.log)"
      IMGFS_MOUNTS["$MNT"]=1
      DISK="$MNT/$(basename "$src")/disk.raw"
      wait_for size_is "$DISK" "$vsize" || die "imgfs: $DISK never reached size $vsize"
      READY_MS=$(( ($(now_ns) - t0) / 1000000 ))
      SPID="$(imgfs_pid_for "$MNT")" || die "cannot find the imgfs daemon pid for $MNT"
      PIDS+=("$SPID")
      ;;
    qsd)
      MNT="$W/mnt/qsd.disk"   # a fuse export mounts over a regular file
      : > "$MNT"
      local pidf="$W/qsd.pid"
      rm -f "$pidf"
      local wr=off
      [[ "$mode" == rw ]] && wr=on
      t0=$(now_ns)
      # --daemonize returns once the export is set up
      "$QSD" --daemonize --pidfile "$pidf" \
        --blockdev "driver=file,node-name=file,filename=$src" \
        --blockdev "driver=qcow2,node-name=fmt,file=file" \
        --export "type=fuse,id=exp,node-name=fmt,mountpoint=$MNT,writable=$wr" \
        > "$W/log/qsd.log" 2>&1 || die "qemu-storage-daemon failed: $(cat "$W/log/qsd.log")"
      DISK="$MNT"
      wait_for size_is "$DISK" "$vsize" || die "qsd: export never reached size $vsize"
      READY_MS=$(( ($(now_ns) - t0) / 1000000 ))
      SPID="$(cat "$pidf")"
      PIDS+=("$SPID")
      ;;
    ceiling)
      [[ "$mode" == ro ]] || die "ceiling is read-only"
      MNT="$W/mnt/ceiling"
      mkdir -p "$MNT"
      t0=$(now_ns)
      "$CEIL_BIN" "$CEIL_SRC" "$MNT" > "$W/log/ceiling.log" 2>&1 &
      SPID=$!
      PIDS+=("$SPID")
      DISK="$MNT/disk.raw"
      wait_for size_is "$DISK" "$(stat -c %s "$CEIL_SRC")" \
        || die "ceiling: $DISK never appeared ($(cat "$W/log/ceiling.log"))"
      READY_MS=$(( ($(now_ns) - t0) / 1000000 ))
      # imgfs raises its own mount's readahead to max_read (1 MiB); give the
      # ceiling the same, or it would not be a ceiling for buffered reads.
      # qsd is measured as it ships (128 KiB, the kernel's default).
      echo 4096 > "/sys/class/bdi/$(mountpoint -d "$MNT")/read_ahead_kb" \
        || log "ceiling: could not raise read_ahead_kb"
      ;;
  esac
}

stop_subject() {
  local subj="$1"
  case "$subj" in
    imgfs)
      timeout 120 "$IMGFS" umount "$MNT" || die "imgfs umount $MNT failed"
      unset 'IMGFS_MOUNTS[$MNT]'
      ;;
    qsd|ceiling)
      kill -TERM "$SPID" 2>/dev/null || true
      ;;
  esac
  wait_for pid_gone "$SPID" || die "$subj daemon $SPID did not exit"
  if [[ "$subj" == ceiling ]]; then wait "$SPID" 2>/dev/null || true; fi   # our child: reap it
  local i
  for (( i = 0; i < 500; i++ )); do not_mounted "$MNT" && return 0; sleep 0.01; done
  log "WARNING: $subj daemon exited but left $MNT mounted; unmounting it"
  fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" || die "cannot unmount $MNT"
}

# ---------------------------------------------------------------- measurements
# Every measured read starts from the same state: caches dropped (which
# also frees what earlier mounts left in the page cache) and a second of
# quiet for the kernel to finish tearing down the previous subject's mount.
# An in-memory (tmpfs) image stays in memory through drop_caches; it is
# read once more so that its pages are hot, as a disk file's would be.
# (Without this, whoever ran first in a round read 3-4x faster.)
settle() {  # [IN_MEMORY_FILE]
  drop_caches
  sleep 1
  if [[ -n "${1:-}" ]]; then cat "$1" > /dev/null; fi
}

# seq read of the whole disk with 1 MiB reads; wall clock around dd
#   cold: caches dropped (the host disk sets the pace);
#   warm (3rd arg = the file the subject serves): that file is read into the
#   host page cache first, so the FUSE server itself sets the pace.  The
#   mount is fresh either way, so nothing of the disk file is cached yet.
measure_seqread() {  # SUBJ DISK [BACKING_FILE_TO_WARM]
  local t0 t1 bytes out
  settle "${3:-}"
  t0=$(now_ns)
  out="$(dd if="$2" of=/dev/null bs=1M 2>&1)" || die "$1: dd read failed: $out"
  t1=$(now_ns)
  bytes="$(awk '/bytes/ {print $1; exit}' <<< "$out")"
  [[ "$bytes" == "$SIZE_BYTES" ]] || die "$1: sequential read returned $bytes bytes, expected $SIZE_BYTES"
  python3 -c "print('%.1f' % ($bytes / 1048576 / (($t1 - $t0) / 1e9)))"
}

# 4 KiB random reads QD1; O_DIRECT, falling back to buffered if refused
measure_randread() {  # SUBJ DISK [BACKING_FILE_TO_WARM] ; prints "IOPS MODE"
  local subj="$1" disk="$2" warm="${3:-}" direct mode json
  for direct in 1 0; do
    mode=$([[ $direct == 1 ]] && echo direct || echo buffered)
    # cold: the image file starts out of the host page cache (the host disk
    # sets the pace); warm: all of it is in the host page cache first (the
    # FUSE server sets the pace)
    settle "$warm"
    json="$W/fio-rand-$subj.json"
    rm -f "$json"
    if fio --name=randread --filename="$disk" --rw=randread --bs=4k --direct="$direct" \
           --iodepth=1 --ioengine=psync --runtime="$RAND_RUNTIME" --time_based \
           --output-format=json --output="$json" > "$W/log/fio-$subj.log" 2>&1; then
      local iops
      iops="$(python3 - "$json" <<'EOF'
import json, sys
txt = open(sys.argv[1]).read()
j = json.loads(txt[txt.index("{"):])["jobs"][0]   # fio may prefix warnings
if j.get("error", 0) or j["read"]["io_bytes"] == 0:
    sys.exit(1)
print("%.0f" % j["read"]["iops"])
EOF
)" && { echo "$iops $mode"; return 0; }
    fi
    log "$subj: fio randread with direct=$direct failed: $(tail -n 3 "$W/log/fio-$subj.log" | tr '\n' ' ')"
  done
  die "$subj: random read failed both with and without O_DIRECT"
}

# sequential 1 MiB writes of WRITE_MIB from a cached random file, conv=fsync;
# wall clock around dd, so the final fsync is included (fio's own bandwidth
# figure with --end_fsync=1 does NOT include the fsync time).
measure_write() {  # SUBJ DISK
  local t0 t1 out
  sync
  cat "$SRC" > /dev/null   # source in page cache, not part of the measurement
  t0=$(now_ns)
  out="$(dd if="$SRC" of="$2" bs=1M count="$WRITE_MIB" conv=fsync,notrunc 2>&1)" \
    || die "$1: dd write failed: $out"
  t1=$(now_ns)
  python3 -c "print('%.1f' % ($WRITE_MIB / (($t1 - $t0) / 1e9)))"
}

verify_read_content() {  # SUBJ DISK [REF] (round 1 only, not timed)
  cmp -s "${3:-$REF_RAW}" "$2" || die "$1: disk content differs from qemu-img convert output"
  log "$1: content verified against qemu-img convert"
}

verify_written_image() {  # SUBJ IMAGE (after unmount)
  qemu-img check -q "$2" || die "$1: qemu-img check failed after write bench"
  # non-strict compare: the part beyond the source must read as zeros
  qemu-img compare -q -f qcow2 -F raw "$2" "$SRC" \
    || die "$1: written image does not match the data written"
}

# ---------------------------------------------------------------- run
make_bench_image
mkdir -p "$(dirname "$ZIMG")"
# (h) wants decompression to be the work: qemu-io's byte patterns compress
# to almost nothing and decode at memset speed, so the zstd disk holds
# text-like bytes instead (16 symbols, about 2:1 under zstd), with holes.
log "making the zstd-compressed disk"
python3 - "$ZRAW" "$SIZE_BYTES" "$SEED" <<'EOF'
import os, random, sys
path, size, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(seed)
table = bytes(b"etaoinshrdlucmfw"[i % 16] for i in range(256))
chunk = 4 << 20
with open(path, "wb") as f:
    f.truncate(size)
    for off in range(0, size, chunk):
        if rnd.random() < 0.25:
            continue  # a hole
        f.seek(off)
        f.write(os.urandom(chunk).translate(table))
EOF
qemu-img convert -c -f raw -O qcow2 -o compression_type=zstd "$ZRAW" "$ZIMG"
log "zstd disk: $(( $(stat -c %s "$ZIMG") / 1048576 )) MiB for $(( SIZE_BYTES / 1048576 )) MiB"
python3 -c "
import os
with open('$SRC', 'wb') as f:
    for _ in range($WRITE_MIB):
        f.write(os.urandom(1 << 20))"
if has_subject imgfs && (( NIMAGES > 0 )); then make_many_images; fi
# untimed warm-up: the VM's disk may itself be cached by the host, so make
# the first measured round start from the same host-side state as the others
cat "$IMG" "$REF_RAW" "$ZIMG" > /dev/null
# In-memory copies for the server-bound rows (see the header).
SHM="$(mktemp -d /dev/shm/imgfs-bench.XXXXXX)" || die "no /dev/shm for the in-memory rows"
mkdir -p "$SHM/ro" "$SHM/ref" "$SHM/zro"
cp "$IMG" "$SHM/ro/bench.qcow2"; cp --sparse=always "$REF_RAW" "$SHM/ref/bench.raw"; cp "$ZIMG" "$SHM/zro/bench.qcow2"
CEIL_SRC="$REF_RAW"

read_subjects=()
for s in imgfs qsd ceiling; do has_subject "$s" && read_subjects+=("$s"); done
write_subjects=()
for s in imgfs qsd; do has_subject "$s" && write_subjects+=("$s"); done

log "subjects: ${read_subjects[*]}; rounds: $ROUNDS; image ${SIZE_GIB} GiB; write ${WRITE_MIB} MiB; randread ${RAND_RUNTIME}s"
bench_t0=$(date +%s)

for (( r = 1; r <= ROUNDS; r++ )); do
  log "---- round $r/$ROUNDS"
  if (( ${#read_subjects[@]} > 0 )); then
    # storage baseline (no FUSE): how fast the underlying disk is this round;
    # the VM disk is noisy, this helps to read the spread of (a)
    drop_caches
    t0=$(now_ns)
    dd if="$REF_RAW" of=/dev/null bs=1M status=none
    record baseline raw "$(python3 -c "print('%.1f' % ($SIZE_BYTES / 1048576 / (($(now_ns) - $t0) / 1e9)))")"
  fi
  # rotate the order so no subject always runs first
  n=${#read_subjects[@]}
  for (( k = 0; k < n; k++ )); do
    s="${read_subjects[$(( (k + r - 1) % n ))]}"
    # in memory first (tmpfs copies), then from the disk with caches dropped
    CEIL_SRC="$SHM/ref/bench.raw"
    start_subject "$s" ro "$SHM/ro/bench.qcow2"
    vw="$(measure_seqread "$s" "$DISK" "$CEIL_SRC")"
    record seqwarm "$s" "$vw"
    rr="$(measure_randread "$s" "$DISK" "$CEIL_SRC")"
    read -r wiops _ <<< "$rr"
    record randwarm "$s" "$wiops"
    stop_subject "$s"
    CEIL_SRC="$REF_RAW"
    start_subject "$s" ro "$IMG"
    record mount1 "$s" "$READY_MS"
    v="$(measure_seqread "$s" "$DISK")"
    record seqread "$s" "$v"
    record rss1 "$s" "$(rss_mib "$SPID")"
    rr="$(measure_randread "$s" "$DISK")"
    read -r iops mode <<< "$rr"
    record randread "$s" "$iops"
    echo "$mode" >> "$RES/randmode.$s"
    log "$s: ready ${READY_MS} ms, seq read $v MiB/s cold, $vw in memory, randread $iops IOPS cold, $wiops in memory ($mode)"
    if (( r == 1 )); then verify_read_content "$s" "$DISK"; fi
    stop_subject "$s"
  done
  # (h) sequential read of the zstd-compressed copy (decompression bound)
  for s in "${read_subjects[@]}"; do
    [[ "$s" == ceiling ]] && continue
    start_subject "$s" ro "$SHM/zro/bench.qcow2"
    vw="$(measure_seqread "$s" "$DISK" "$SHM/zro/bench.qcow2")"
    record zwarm "$s" "$vw"
    stop_subject "$s"
    start_subject "$s" ro "$ZIMG"
    v="$(measure_seqread "$s" "$DISK")"
    record zread "$s" "$v"
    if (( r == 1 )); then verify_read_content "$s" "$DISK" "$ZRAW"; fi
    stop_subject "$s"
    log "$s: seq read of the zstd-compressed image $v MiB/s cold, $vw in memory"
  done

  n=${#write_subjects[@]}
  if (( n > 0 )); then
    # Untimed warm-up write: the first writer after the read phase was
    # always the slow one (host writeback state), whoever it was.
    dd if="$SRC" of="$W/warmup" bs=1M count="$WRITE_MIB" conv=fsync status=none
    rm -f "$W/warmup"
    sync
  fi
  for (( k = 0; k < n; k++ )); do
    s="${write_subjects[$(( (k + r - 1) % n ))]}"
    rm -rf "$W/rw"; mkdir -p "$W/rw"
    wimg="$W/rw/bench.qcow2"
    qemu-img create -q -f qcow2 "$wimg" "${SIZE_GIB}G"
    start_subject "$s" rw "$wimg"
    v="$(measure_write "$s" "$DISK")"
    record write "$s" "$v"
    stop_subject "$s"
    verify_written_image "$s" "$wimg"
    log "$s: write $v MiB/s (image verified)"
  done
  rm -rf "$W/rw"

  if has_subject imgfs && (( NIMAGES > 0 )); then
    MNT="$W/mnt/many"
    mkdir -p "$MNT"
    drop_caches
    t0=$(now_ns)
    "$IMGFS" mount --log "$W/log/imgfs-many.log" "$W/many" "$MNT" || die "imgfs mount of $NIMAGES images failed"
    IMGFS_MOUNTS["$MNT"]=1
    count_is() { [[ "$(ls "$MNT" | wc -l)" == "$NIMAGES" ]]; }
    wait_for count_is || die "imgfs: $MNT never listed $NIMAGES entries"
    ms=$(( ($(now_ns) - t0) / 1000000 ))
    SPID="$(imgfs_pid_for "$MNT")" || die "cannot find the imgfs daemon pid for $MNT"
    PIDS+=("$SPID")
    ls -l "$MNT"/*/ > /dev/null
    rss="$(rss_mib "$SPID")"
    record mountdir imgfs "$ms"
    record rssdir imgfs "$rss"
    log "imgfs: $NIMAGES images mounted in $ms ms, RSS $rss MiB after ls -l"
    stop_subject imgfs
  fi
done

bench_t1=$(date +%s)

# ---------------------------------------------------------------- report
python3 - "$RES" "$SIZE_GIB" "$WRITE_MIB" "$NIMAGES" "$ROUNDS" "$RAND_RUNTIME" "$DROP_CACHES_OK" "$((bench_t1 - bench_t0))" <<'EOF'
import os, statistics, sys
res, size_gib, write_mib, nimg, rounds, rt, dropok, secs = sys.argv[1:]
subjects = ["imgfs", "qsd", "ceiling"]

def vals(metric, s):
    p = os.path.join(res, "%s.%s" % (metric, s))
    if not os.path.exists(p):
        return None
    return [float(x) for x in open(p).read().split()]

def med(metric, s):
    v = vals(metric, s)
    return statistics.median(v) if v else None

def mode(s):
    p = os.path.join(res, "randmode.%s" % s)
    return set(open(p).read().split()) if os.path.exists(p) else set()

buffered = [s for s in subjects if "buffered" in mode(s)]
rows = [
    ("seqread", "(a) seq read %s GiB, 1 MiB reads [MiB/s, higher=better]" % size_gib, "%.0f"),
    ("seqwarm", "(a') the same, image file in memory (tmpfs) [MiB/s, higher=better]", "%.0f"),
    ("randread", "(b) 4 KiB rand read QD1 O_DIRECT%s, cold host cache [IOPS, higher=better]" % ("*" if buffered else ""), "%.0f"),
    ("randwarm", "(b') the same, image file in memory (tmpfs) [IOPS, higher=better]", "%.0f"),
    ("zread", "(h) seq read 1 GiB, zstd-compressed qcow2 [MiB/s, higher=better]", "%.0f"),
    ("zwarm", "(h') the same, image file in memory (tmpfs) [MiB/s, higher=better]", "%.0f"),
    ("write", "(c) seq write %s MiB + fsync, fresh qcow2 [MiB/s, higher=better]" % write_mib, "%.0f"),
    ("mountdir", "(d) mount dir of %s qcow2 until listed [ms, lower=better]" % nimg, "%.0f"),
    ("rssdir", "(e) daemon RSS after ls -l on %s images [MiB, lower=better]" % nimg, "%.1f"),
    ("mount1", "(f) mount 1 image until disk readable [ms, lower=better]", "%.0f"),
    ("rss1", "(g) daemon RSS after seq read of 1 image [MiB, lower=better]", "%.1f"),
]

def fmt(v, f):
    return "n/a" if v is None else f % v

def ratio(a, b):
    return "n/a" if a is None or b is None or b == 0 else "%.2f" % (a / b)

print()
print("## imgfs benchmark: medians of %s round(s)" % rounds)
print()
print("| metric | imgfs | qsd | ceiling | imgfs/qsd | imgfs/ceiling |")
print("|---|---:|---:|---:|---:|---:|")
for key, label, f in rows:
    m = {s: med(key, s) for s in subjects}
    print("| %s | %s | %s | %s | %s | %s |" % (
        label, fmt(m["imgfs"], f), fmt(m["qsd"], f), fmt(m["ceiling"], f),
        ratio(m["imgfs"], m["qsd"]), ratio(m["imgfs"], m["ceiling"])))
print()
if buffered:
    print("\\* O_DIRECT was refused for: %s -- buffered random reads (caches dropped before) were measured instead for them." % ", ".join(buffered))
if dropok != "1":
    print("WARNING: drop_caches was not writable; read numbers may include page-cache hits.")
print("qsd = qemu-storage-daemon FUSE export (qcow2 over file driver, default cache); "
      "ceiling = bare splice FUSE server over the qemu-img-converted raw file (read-only),"
      " with read_ahead_kb raised to 4096 as imgfs does for its own mount; qsd keeps the kernel default (128).")
print("(d)/(e) exist only for imgfs. Random reads: %s s per subject per round." % rt)
b = vals("baseline", "raw")
if b:
    print("Storage baseline (dd bs=1M of the raw reference file, no FUSE, caches dropped): median %.0f MiB/s, "
          "per round %s. Read numbers move with it; compare within a round when it is noisy."
          % (statistics.median(b), " ".join("%.0f" % x for x in b)))
print()
print("Per-round values:")
for key, label, f in rows:
    for s in subjects:
        v = vals(key, s)
        if v:
            print("  %-9s %-8s %s" % (key, s, " ".join(f % x for x in v)))
print("Total measured time: %s s" % secs)
EOF
