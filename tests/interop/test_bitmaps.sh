#!/usr/bin/env bash
# Persistent dirty bitmaps: imgfs info lists them as qemu-img info does,
# imgfs check counts their clusters; writing the image keeps the bitmaps
# that track writes ("auto") in step exactly as qemu does (checked against
# the same writes made by qemu-io on a copy), leaves disabled ones alone,
# and keeps the image check-clean; a resize resizes them as qemu does; a
# snapshot apply that changes the size marks every bitmap in_use.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGWRITE" "$IMGFS"
tmpdir

img=$T/bm.qcow2
qemu-img create -q -f qcow2 "$img" 16M
qemu-img bitmap --add "$img" tracking
qemu-img bitmap --add -g 128k --disable "$img" frozen
qio "$img" qcow2 "write -P 0x01 0 1M"
same() { # WHAT: imgfs and qemu-img agree on info (text and JSON) and check
    diff <("$IMGFS" info "$img" | sed -n '/Format specific/,$p') <(qemu-img info "$img" | sed -n '/Format specific/,$p') \
        || fail "$1: imgfs info differs from qemu-img info"
    python3 - "$img" "$IMGFS" <<'PYEOF' || fail "$1: bitmaps in JSON differ"
import json, subprocess, sys
img, imgfs = sys.argv[1], sys.argv[2]
q = json.loads(subprocess.check_output(["qemu-img", "info", "--output=json", img]))["format-specific"]["data"]
i = json.loads(subprocess.check_output([imgfs, "info", "--output=json", img]))["format-specific"]["data"]
sys.exit(0 if q.get("bitmaps") == i.get("bitmaps") else 1)
PYEOF
    [[ $("$IMGFS" check "$img" 2>&1) == $(qemu-img check "$img" 2>&1) ]] || fail "$1: imgfs check differs from qemu-img check"
    echo "   $1: info and check agree with qemu-img"
}
# bitmap_flags IMG: "name=flag,flag;name=..." as qemu-img info lists them
bitmap_flags() {
    qemu-img info --output=json "$1" | python3 -c '
import json, sys
bm = json.load(sys.stdin)["format-specific"]["data"]["bitmaps"]
print(";".join(b["name"] + "=" + ",".join(b["flags"]) for b in bm))'
}
same "two bitmaps, one disabled"
qemu-img info --output=json "$img" | grep -q '"in-use"' && fail "in_use before any write"
cp "$img" "$T/ref.qcow2"
"$IMGWRITE" "$img" 2097152 0x05 4096 || fail "imgwrite"
qio "$T/ref.qcow2" qcow2 "write -P 0x05 2097152 4096"
qcheck "$img" "after a write"
flags=$(bitmap_flags "$img")
[[ $flags == "tracking=auto;frozen=" ]] || fail "bitmap flags after a write: $flags"
diff <(python3 "$BITMAP_RUNS" "$T/ref.qcow2") <(python3 "$BITMAP_RUNS" "$img") ||
    fail "the bitmaps differ from qemu's after the same write"
grep -q "^tracking .*runs=\[0-1048575, 2097152-2162687\]" <(python3 "$BITMAP_RUNS" "$img") ||
    fail "tracking does not hold qemu-io's and imgfs's writes: $(python3 "$BITMAP_RUNS" "$img")"
same "after a write"

# Several granularities, a bitmap spanning several clusters (4 KiB clusters,
# 512-byte granularity over 64 MiB: 16 KiB of bits), bits already set by
# qemu, writes at unaligned offsets and across a bitmap cluster's edge.
img=$T/step.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 64M
qemu-img bitmap --add -g 512 "$img" fine
qemu-img bitmap --add -g 1M "$img" coarse
qemu-img bitmap --add -g 64k "$img" frozen
qio "$img" qcow2 "write -P 0x01 1000 5000" "write -P 0x02 33554432 65536"
qemu-img bitmap --disable "$img" frozen   # holds bits, takes no more
cp "$img" "$T/ref.qcow2"
for w in "16777000 0x11 9000" "0 0x12 1" "67108863 0x13 1" "5000 0x14 3000000" "41943040 0x15 1048576"; do
    read -r o pat n <<<"$w"
    "$IMGWRITE" "$img" "$o" "$pat" "$n" || fail "imgwrite $w"
    qio "$T/ref.qcow2" qcow2 "write -P $pat $o $n"
done
qcheck "$img" "after writes kept in step"
diff <(python3 "$BITMAP_RUNS" "$T/ref.qcow2") <(python3 "$BITMAP_RUNS" "$img") ||
    fail "the bitmaps differ from qemu's after the same writes"
[[ $(bitmap_flags "$img") == "fine=auto;coarse=auto;frozen=" ]] || fail "bitmap flags: $(bitmap_flags "$img")"
qemu-img compare -q "$T/ref.qcow2" "$img" || fail "content differs from qemu-io's"
# qemu itself reads the stored bitmaps: it copies them bit for bit
qemu-img convert -f qcow2 -O qcow2 --bitmaps "$img" "$T/copied.qcow2" || fail "qemu-img convert --bitmaps"
diff <(python3 "$BITMAP_RUNS" "$img") <(python3 "$BITMAP_RUNS" "$T/copied.qcow2") ||
    fail "qemu reads other bits from the stored bitmaps"
echo "   bitmaps kept in step: $(python3 "$BITMAP_RUNS" "$img" | grep ^fine)"
# A snapshot switch changes the disk (the spec names it): the whole disk
# counts as written.
qemu-img snapshot -c before "$img"
"$IMGFS" snapshot -a before "$img" || fail "imgfs snapshot -a"
qcheck "$img" "after a snapshot switch"
[[ $(python3 "$BITMAP_RUNS" "$img" | grep ^fine) == "fine granularity=512 flags=auto runs=[0-67108863]" ]] ||
    fail "after a snapshot switch: $(python3 "$BITMAP_RUNS" "$img" | grep ^fine)"
[[ $(python3 "$BITMAP_RUNS" "$img" | grep ^frozen) == "frozen granularity=65536 flags= runs=[0-65535, 33554432-33619967]" ]] ||
    fail "a disabled bitmap changed: $(python3 "$BITMAP_RUNS" "$img" | grep ^frozen)"
# A resize takes the bitmaps along, as qemu-img resize does: every bitmap
# (enabled or not) gets the new size, new bits clear, cut bits gone, and no
# bitmap is left in_use. Checked against qemu-img resize on a copy.
for to in 40M 5M; do
    img=$T/resize-$to.qcow2
    qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 16M
    qemu-img bitmap --add -g 512 "$img" tracking
    qemu-img bitmap --add -g 64k "$img" frozen
    qio "$img" qcow2 "write -P 0x21 1000 5000" "write -P 0x22 4M 64k" "write -P 0x23 15M 1M"
    qemu-img bitmap --disable "$img" frozen
    cp "$img" "$T/ref.qcow2"
    shrink=(); [[ $to == 5M ]] && shrink=(--shrink)
    qemu-img resize -q "${shrink[@]}" "$T/ref.qcow2" "$to"
    "$IMGFS" resize -q "${shrink[@]}" "$img" "$to" || fail "imgfs resize to $to of an image with bitmaps"
    qcheck "$img" "after resize to $to"
    [[ $(bitmap_flags "$img") == "$(bitmap_flags "$T/ref.qcow2")" ]] ||
        fail "flags after resize to $to: $(bitmap_flags "$img"), qemu: $(bitmap_flags "$T/ref.qcow2")"
    diff <(python3 "$BITMAP_RUNS" "$T/ref.qcow2") <(python3 "$BITMAP_RUNS" "$img") ||
        fail "the bitmaps differ from qemu's after resize to $to"
    "$IMGWRITE" "$img" 4194304 0x24 100 || fail "a write after resize to $to"
    qio "$T/ref.qcow2" qcow2 "write -P 0x24 4194304 100"
    diff <(python3 "$BITMAP_RUNS" "$T/ref.qcow2") <(python3 "$BITMAP_RUNS" "$img") ||
        fail "the bitmaps differ from qemu's after a write at the new size ($to)"
    echo "   resize to $to: $(bitmap_flags "$img"); bits as qemu's"
done
# A snapshot apply that changes the size: no bitmap is exact at either size,
# so all become in_use (the spec's "size may be outdated") and qemu still
# opens the image.
img=$T/apply.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 16M
qemu-img bitmap --add -g 512 "$img" tracking
qemu-img bitmap --add -g 512 --disable "$img" frozen
qemu-img snapshot -c small "$img"
qemu-img resize -q "$img" 32M
"$IMGFS" snapshot -a small "$img" || fail "imgfs snapshot -a to a smaller snapshot"
qemu-img info "$img" > /dev/null || fail "apply: qemu-img cannot open the image: $(qemu-img info "$img" 2>&1)"
qcheck "$img" "after apply"
flags=$(bitmap_flags "$img")
[[ $flags == "tracking=in-use,auto;frozen=in-use" ]] || fail "bitmap flags after apply: $flags"
echo "   apply across sizes: every bitmap in_use, qemu-img opens and checks the image"
echo "PASS: bitmaps"
