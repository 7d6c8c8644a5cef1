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
#   convert  the base as qcow2 -> raw, raw -> qcow2, vmdk -> qcow2, and a
#            disk of compressible text-like data and holes as qcow2 -> zstd
#            compressed qcow2 (-c -o compression_type=zstd), against
#            qemu-img convert and qemu-img convert -m 16 -W; beside them
#            `cp --sparse=always` of the raw image: the floor of any copy
#            (the data moved once, holes skipped), which shows how much room
#            qemu-img leaves
#   targetzero  convert -n --target-is-zero of a 100 GiB qcow2 (the base's
#            data in its first GiB) onto an existing empty 100 GiB raw file
# Every result is checked: compare's exit code, the rebased image and each
# converted one with qemu-img compare.
# Environment: ROUNDS=5 SIZE_GIB=1 IMGFS=... ONLY="compare rebase"
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROUNDS=${ROUNDS:-5}
SIZE_GIB=${SIZE_GIB:-1}
ONLY=${ONLY:-compare rebase convert targetzero}
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
python3 "$HERE/make_disk.py" base.raw "$SIZE" 7 random
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

# convert_case NAME SRC OUTFMT [OPTS...]: qemu-img convert, qemu-img convert
# -m 16 -W and imgfs convert of SRC to OUTFMT; every output compared.
convert_case() {
  local name=$1 src=$2 fmt=$3 r s
  shift 3
  for r in $(seq 1 "$ROUNDS"); do
    for s in qemu qemuW imgfs; do
      rm -f out.img
      case $s in
        qemu) run "$name" "$s" qemu-img convert -O "$fmt" "$@" "$src" out.img ;;
        qemuW) run "$name" "$s" qemu-img convert -m 16 -W -O "$fmt" "$@" "$src" out.img ;;
        imgfs) run "$name" "$s" "$IMGFS" convert -O "$fmt" "$@" "$src" out.img ;;
      esac
      [[ $RC == 0 ]] || die "$s convert $name: exit $RC"
      qemu-img compare -q "$src" out.img || die "$s convert $name: the output differs from the source"
    done
    log "$name round $r: qemu $(tail -1 "$RES/$name.qemu") s, -m 16 -W $(tail -1 "$RES/$name.qemuW") s, imgfs $(tail -1 "$RES/$name.imgfs") s"
  done
  rm -f out.img
}

if [[ " $ONLY " == *" convert "* ]]; then
  log "convert: qcow2 -> raw, raw -> qcow2, vmdk -> qcow2"
  qemu-img convert -O raw base.qcow2 base.raw
  qemu-img convert -O vmdk base.qcow2 base.vmdk
  convert_case conv-qcow2-raw base.qcow2 raw
  convert_case conv-raw-qcow2 base.raw qcow2
  for r in $(seq 1 "$ROUNDS"); do
    rm -f copy.raw
    run cp-floor cp cp --sparse=always base.raw copy.raw
    cmp -s base.raw copy.raw || die "cp --sparse=always made another file"
  done
  rm -f copy.raw
  log "cp --sparse=always of the raw image: $(tr '\n' ' ' <"$RES/cp-floor.cp") s"
  convert_case conv-vmdk-qcow2 base.vmdk qcow2
  rm -f base.raw base.vmdk
  log "convert: qcow2 -> zstd-compressed qcow2, on compressible data"
  python3 "$HERE/make_disk.py" text.raw "$SIZE" 11 text
  qemu-img convert -f raw -O qcow2 text.raw text.qcow2
  rm text.raw
  convert_case conv-qcow2-zstd text.qcow2 qcow2 -c -o compression_type=zstd
  rm -f text.qcow2
fi

if [[ " $ONLY " == *" targetzero "* ]]; then
  log "convert -n --target-is-zero: a 100 GiB qcow2 onto an empty 100 GiB raw file"
  qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 big.qcow2 100G
  for r in $(seq 1 "$ROUNDS"); do
    for s in qemu imgfs; do
      rm -f target.raw
      truncate -s 100G target.raw
      tool=qemu-img
      [[ $s == imgfs ]] && tool=$IMGFS
      run targetzero "$s" "$tool" convert -n --target-is-zero -O raw big.qcow2 target.raw
      [[ $RC == 0 ]] || die "$s convert -n --target-is-zero: exit $RC"
      qemu-img compare -q -f qcow2 -F raw big.qcow2 target.raw || die "$s convert -n --target-is-zero: other content"
    done
    log "targetzero round $r: qemu $(tail -1 "$RES/targetzero.qemu") s, imgfs $(tail -1 "$RES/targetzero.imgfs") s"
  done
  rm -f target.raw big.qcow2
fi

python3 - "$RES" "$ROUNDS" "$SIZE_GIB" <<'PY'
import os, statistics, sys
res, rounds, gib = sys.argv[1], sys.argv[2], sys.argv[3]
rows = [("compare", "compare: two %s GiB overlays on one backing file, 1%% different" % gib),
        ("rebase", "rebase (safe): base + diff, %s GiB" % gib),
        ("conv-qcow2-raw", "convert qcow2 -> raw, %s GiB" % gib),
        ("conv-raw-qcow2", "convert raw -> qcow2, %s GiB" % gib),
        ("conv-vmdk-qcow2", "convert vmdk -> qcow2, %s GiB" % gib),
        ("conv-qcow2-zstd", "convert -c -o compression_type=zstd, qcow2 -> qcow2, %s GiB" % gib),
        ("targetzero", "convert -n --target-is-zero, 100 GiB qcow2 -> empty 100 GiB raw")]
def med(key, s):
    p = os.path.join(res, "%s.%s" % (key, s))
    return statistics.median(float(x) for x in open(p).read().split()) if os.path.exists(p) else None
print()
print("## imgfs command against qemu-img: medians of %s round(s), seconds (lower is better)" % rounds)
print()
print("| operation | qemu-img | qemu-img -m 16 -W | imgfs | qemu-img/imgfs | (-m 16 -W)/imgfs |")
print("|---|---:|---:|---:|---:|---:|")
for key, label in rows:
    mq, mw, mi = med(key, "qemu"), med(key, "qemuW"), med(key, "imgfs")
    if mq is None or mi is None:
        continue
    w = "%.3f" % mw if mw else "n/a"
    wr = "**%.2f**" % (mw / mi) if mw else ""
    print("| %s | %.3f | %s | %.3f | **%.2f** | %s |" % (label, mq, w, mi, mq / mi, wr))
floor = med("cp-floor", "cp")
if floor:
    print()
    print("Floor: `cp --sparse=always` of the %s GiB raw image takes %.3f s; qemu-img convert qcow2 -> raw"
          " takes %.2fx that, imgfs %.2fx." % (gib, floor, (med("conv-qcow2-raw", "qemu") or 0) / floor,
                                              (med("conv-qcow2-raw", "imgfs") or 0) / floor))
print()
print("Per-round values (s):")
for key, _ in rows + [("cp-floor", "")]:
    for s in ("qemu", "qemuW", "imgfs", "cp"):
        p = os.path.join(res, "%s.%s" % (key, s))
        if os.path.exists(p):
            print("  %-8s %-6s %s" % (key, s, " ".join("%.3f" % float(x) for x in open(p).read().split())))
PY
