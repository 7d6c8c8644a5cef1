#!/usr/bin/env bash
# Persistent dirty bitmaps: imgfs info lists them as qemu-img info does,
# imgfs check counts their clusters, and writing the image marks the bitmaps
# that track writes ("auto") in_use (inconsistent) before any data changes,
# leaves disabled ones alone, and keeps the image check-clean; a resize or
# a snapshot apply that changes the size marks every bitmap in_use.
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
"$IMGWRITE" "$img" 2097152 0x05 4096 || fail "imgwrite"
qcheck "$img" "after a write"
flags=$(bitmap_flags "$img")
[[ $flags == "tracking=in-use,auto;frozen=" ]] || fail "bitmap flags after a write: $flags"
same "after a write"
# A size change outdates every bitmap's size: all become in_use (the spec's
# "size may be outdated"), so qemu still opens the image.
for how in resize apply; do
    img=$T/$how.qcow2
    qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 16M
    qemu-img bitmap --add -g 512 "$img" tracking
    qemu-img bitmap --add -g 512 --disable "$img" frozen
    if [[ $how == resize ]]; then
        "$IMGFS" resize -q "$img" 32M || fail "imgfs resize of an image with bitmaps"
    else
        qemu-img snapshot -c small "$img"
        qemu-img resize -q "$img" 32M
        "$IMGFS" snapshot -a small "$img" || fail "imgfs snapshot -a to a smaller snapshot"
    fi
    qemu-img info "$img" > /dev/null || fail "$how: qemu-img cannot open the image: $(qemu-img info "$img" 2>&1)"
    qcheck "$img" "after $how"
    flags=$(bitmap_flags "$img")
    [[ $flags == "tracking=in-use,auto;frozen=in-use" ]] || fail "bitmap flags after $how: $flags"
    echo "   $how: every bitmap in_use, qemu-img opens and checks the image"
done
echo "PASS: bitmaps"
