#!/usr/bin/env bash
# The imgfs command against qemu-img on the same inputs, in one run:
# medians of ROUNDS rounds of wall time, and the ratio qemu-img / imgfs
# (above 1: imgfs is faster). The images live on tmpfs (these VMs page out
# an idle page-cache page within a second), so the tools set the pace.
#   compare  two 1 GiB qcow2 overlays on one backing file (half data, half
#            holes), each with the same 1% rewritten, that differ in the
#            last 1% of the disk
#   rebase   the base + diff case: diff.qcow2 on modified.qcow2 (a 1 GiB copy
#            of base.qcow2 with 1% rewritten) moved onto base.qcow2 (safe mode)
# Every result is checked: compare's exit code, the rebased image with
# qemu-img compare against modified.qcow2.
# Environment: ROUNDS=5 SIZE_GIB=1 IMGFS=... ONLY="compare rebase"
set -euo pipefail
ROUNDS=${ROUNDS:-5}
SIZE_GIB=${SIZE_GIB:-1}
ONLY=${ONLY:-compare rebase}
IMGFS_BUILD=${IMGFS_BUILD:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/build}
IMGFS=${IMGFS:-$IMGFS_BUILD/mounttool/imgfs}
log() { printf '[bench_cli %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf 'bench_cli: ERROR: %s\n' "$*" >&2; exit 1; }
for c in qemu-img qemu-io python3 "$IMGFS"; do command -v "$c" >/dev/null || die "missing $c"; done

W=$(mktemp -d /dev/shm/imgfs-bench-cli.XXXXXX)
trap 'rm -rf "$W"' EXIT
cd "$W"
SIZE=$((SIZE_GIB << 30))
RES=$W/res
mkdir -p "$RES"

log "making a ${SIZE_GIB} GiB base of data runs and holes"
python3 - base.raw "$SIZE" <<'PY'
import os, random, sys
path, size = sys.argv[1], int(sys.argv[2])
rnd = random.Random(7)
chunk = 4 << 20
with open(path, "wb") as f:
    f.truncate(size)
    pos = 0
    while pos < size:
        run = min(rnd.randint(1, 16) * chunk, size - pos)
        if rnd.random() < 0.5:
            f.seek(pos)
            for _ in range(run // chunk): f.write(os.urandom(chunk))
        pos += run
PY
qemu-img convert -f raw -O qcow2 base.raw base.qcow2
rm base.raw
# 1% of the disk rewritten: 64 KiB writes spread over it
python3 - "$SIZE" >changes.txt <<'PY'
import random, sys
size = int(sys.argv[1]); rnd = random.Random(3)
n = size // 100 // 65536
for off in sorted(rnd.sample(range(size // 65536), n)):
    print("write -P %d %d 64k" % (1 + off % 250, off * 65536))
PY
qio_script() {  # qio_script IMG FILE: run the qemu-io commands in FILE
    local args=() line
    while read -r line; do args+=(-c "$line"); done <"$2"
    qemu-io -f qcow2 "${args[@]}" "$1" >/dev/null
}

# run NAME SUBJECT CMD...: time CMD, record seconds; RC = its exit code
run() {
  local name=$1 subj=$2 t0 t1
  shift 2
  t0=$(date +%s.%N)
  RC=0
  "$@" || RC=$?
  t1=$(date +%s.%N)
  echo "$t1 - $t0" | bc -l >>"$RES/$name.$subj"
}

if [[ " $ONLY " == *" compare "* ]]; then
  log "compare: two overlays on one backing file, differing in 1%"
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 o1.qcow2
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 o2.qcow2
  # the same scattered writes in both; they differ only in the last 1%,
  # so a compare walks the whole disk before it finds the difference
  qio_script o1.qcow2 changes.txt
  qio_script o2.qcow2 changes.txt
  qemu-io -f qcow2 -c "write -P 77 $((SIZE - SIZE / 100)) $((SIZE / 100))" o2.qcow2 >/dev/null
  for r in $(seq 1 "$ROUNDS"); do
    for s in qemu imgfs; do
      tool=qemu-img
      [[ $s == imgfs ]] && tool=$IMGFS
      run compare "$s" "$tool" compare -q o1.qcow2 o2.qcow2
      [[ $RC == 1 ]] || die "$s compare: exit $RC, not 1 (they differ)"
    done
    log "compare round $r: qemu $(tail -1 "$RES/compare.qemu") s, imgfs $(tail -1 "$RES/compare.imgfs") s"
  done
fi

if [[ " $ONLY " == *" rebase "* ]]; then
  log "rebase: the base + diff case"
  qemu-img convert -O qcow2 base.qcow2 modified.qcow2
  qio_script modified.qcow2 changes.txt
  for r in $(seq 1 "$ROUNDS"); do
    for s in qemu imgfs; do
      rm -f diff.qcow2
      qemu-img create -q -f qcow2 -b modified.qcow2 -F qcow2 diff.qcow2
      tool=qemu-img
      [[ $s == imgfs ]] && tool=$IMGFS
      run rebase "$s" "$tool" rebase -q -b base.qcow2 -F qcow2 diff.qcow2
      [[ $RC == 0 ]] || die "$s rebase: exit $RC"
      qemu-img compare -q diff.qcow2 modified.qcow2 || die "$s rebase: diff.qcow2 does not read as modified.qcow2"
    done
    log "rebase round $r: qemu $(tail -1 "$RES/rebase.qemu") s, imgfs $(tail -1 "$RES/rebase.imgfs") s"
  done
fi

python3 - "$RES" "$ROUNDS" "$SIZE_GIB" <<'PY'
import os, statistics, sys
res, rounds, gib = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [("compare", "compare: two %s GiB overlays on one backing file, 1%% different" % gib),
        ("rebase", "rebase (safe): base + diff, %s GiB" % gib)]
print()
print("## imgfs command against qemu-img: medians of %s round(s), seconds (lower is better)" % rounds)
print()
print("| operation | qemu-img | imgfs | qemu-img/imgfs |")
print("|---|---:|---:|---:|")
for key, label in rows:
    q, i = (os.path.join(res, "%s.%s" % (key, s)) for s in ("qemu", "imgfs"))
    if not (os.path.exists(q) and os.path.exists(i)):
        continue
    mq = statistics.median(float(x) for x in open(q).read().split())
    mi = statistics.median(float(x) for x in open(i).read().split())
    print("| %s | %.3f | %.3f | **%.2f** |" % (label, mq, mi, mq / mi))
print()
print("Per-round values (s):")
for key, _ in rows:
    for s in ("qemu", "imgfs"):
        p = os.path.join(res, "%s.%s" % (key, s))
        if os.path.exists(p):
            print("  %-8s %-6s %s" % (key, s, " ".join("%.3f" % float(x) for x in open(p).read().split())))
PY
