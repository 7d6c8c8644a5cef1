#!/usr/bin/env bash
# imgfs convert --bitmaps against qemu-img convert --bitmaps: the output
# holds the source's bitmaps with the same names, flags, granularities and
# bits (read straight from the files), qemu keeps them in step afterwards,
# in-use bitmaps are refused or skipped, and the refusals exit as qemu-img's
# and leave no file behind.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir

src=$T/src.qcow2
qcreate -f qcow2 -o cluster_size=4096 "$src" 64M
qemu-img bitmap --add -g 512 "$src" fine
qemu-img bitmap --add "$src" plain
qemu-img bitmap --add -g 1M "$src" frozen
qio "$src" qcow2 "write -P 1 1000 5000" "write -P 2 30M 3M" "write -P 3 67108000 864"
qemu-img bitmap --disable "$src" frozen
qio "$src" qcow2 "write -P 4 10M 64k"
qemu-img snapshot -c snap "$src"

same_bitmaps() {  # Q I LABEL
    diff <(python3 "$BITMAP_RUNS" "$1") <(python3 "$BITMAP_RUNS" "$2") || fail "$3: bitmaps differ from qemu-img's"
    qcheck "$2" "$3"
}
for opts in "" "-o cluster_size=2M" "-o cluster_size=512" "-c" "-l snap" "-W -m 16"; do
    # shellcheck disable=SC2086  # the words are options
    qemu-img convert --bitmaps -O qcow2 $opts "$src" "$T/q.qcow2" || fail "qemu-img convert --bitmaps $opts"
    # shellcheck disable=SC2086
    "$IMGFS" convert --bitmaps -O qcow2 $opts "$src" "$T/i.qcow2" || fail "imgfs convert --bitmaps $opts"
    same_bitmaps "$T/q.qcow2" "$T/i.qcow2" "convert --bitmaps $opts"
    qemu-img compare -q "$T/q.qcow2" "$T/i.qcow2" || fail "convert --bitmaps $opts: content differs"
    qio "$T/q.qcow2" qcow2 "write -P 5 50M 100k"
    qio "$T/i.qcow2" qcow2 "write -P 5 50M 100k"
    same_bitmaps "$T/q.qcow2" "$T/i.qcow2" "qemu-io writes after convert --bitmaps $opts"
    echo "   --bitmaps $opts: $(python3 "$BITMAP_RUNS" "$T/i.qcow2" | tr '\n' ' ' | cut -c1-100)..."
done

# Into an existing image (-n): its own bitmaps stay beside the copies.
qcreate -f qcow2 "$T/qn.qcow2" 64M
qemu-img bitmap --add "$T/qn.qcow2" own
cp "$T/qn.qcow2" "$T/in.qcow2"
qemu-img convert -n --bitmaps -O qcow2 "$src" "$T/qn.qcow2" || fail "qemu-img convert -n --bitmaps"
"$IMGFS" convert -n --bitmaps -O qcow2 "$src" "$T/in.qcow2" || fail "imgfs convert -n --bitmaps"
same_bitmaps "$T/qn.qcow2" "$T/in.qcow2" "convert -n --bitmaps"

# Refusals, before any data moves and leaving no output.
qcreate -f raw "$T/r.raw" 64M
qcreate -f qcow2 "$T/clash.qcow2" 64M
qemu-img bitmap --add "$T/clash.qcow2" fine
for args in "-O raw $src $T/out" "-f raw -O qcow2 $T/r.raw $T/out" "-O qcow2 -o compat=0.10 $src $T/out" \
    "-O vmdk $src $T/out" "-O qcow2 $src $src $T/out"; do
    # shellcheck disable=SC2086
    NO_FILE=$T/out errs_as_qemu convert --bitmaps $args
done
cp "$T/clash.qcow2" "$T/before"
errs_as_qemu convert -n --bitmaps -O qcow2 "$src" "$T/clash.qcow2"
cp "$T/before" "$T/clash.qcow2"
"$IMGFS" convert -n --bitmaps -O qcow2 "$src" "$T/clash.qcow2" 2>/dev/null && fail "a clashing name was copied"
cmp -s "$T/before" "$T/clash.qcow2" || fail "a refused convert -n --bitmaps wrote into the target"
NO_FILE=$T/out errs_as_qemu convert --skip-broken-bitmaps -O qcow2 "$src" "$T/out"

# An in-use bitmap (a crash while it was written) is refused, or with
# --skip-broken-bitmaps left out with a warning; the others are copied.
cp "$src" "$T/broken.qcow2"
python3 "$HERE/tools/bitmap_in_use.py" "$T/broken.qcow2"
NO_FILE=$T/out errs_as_qemu convert --bitmaps -O qcow2 "$T/broken.qcow2" "$T/out"
qemu-img convert --bitmaps --skip-broken-bitmaps -O qcow2 "$T/broken.qcow2" "$T/q.qcow2" 2>/dev/null
warn=$("$IMGFS" convert --bitmaps --skip-broken-bitmaps -O qcow2 "$T/broken.qcow2" "$T/i.qcow2" 2>&1) ||
    fail "imgfs convert --skip-broken-bitmaps: $warn"
[[ $warn == *"Skipping inconsistent bitmap 'fine'"* ]] || fail "no warning for the skipped bitmap: $warn"
same_bitmaps "$T/q.qcow2" "$T/i.qcow2" "--skip-broken-bitmaps"
python3 "$BITMAP_RUNS" "$T/i.qcow2" | grep -q '^fine' && fail "the in-use bitmap was copied"
echo "PASS: convert --bitmaps"
