#!/usr/bin/env bash
# VHDX images that qemu-img makes, with every create option, read through
# imagecore byte for byte as `qemu-img convert -O raw` reads them: block
# sizes 1, 32 and 256 MiB, log sizes 1 and 8 MiB, block_state_zero on and
# off, fixed; data at unaligned offsets, across blocks, zeroed and
# discarded ranges. imgfs info agrees with qemu-img info; what imgmap
# calls zero reads as zeros.
# Then the log: an entry written but not applied (tools/vhdx_pending_log.py,
# as a writer killed between the log write and the in-place update leaves
# it) reads as qemu reads the image once it has replayed the log, without
# a byte of the file changing; qemu-img itself refuses such an image
# read-only.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3 cmp sha256sum
need_tool "$IMGCAT" "$IMGMAP" "$IMGFS"
tmpdir

SIZE=$((600 * MiB + 512))  # not a whole block: the last one is cut short

# fill IMG BLOCK: data at unaligned offsets, one write across a block
# boundary, a zeroed range and a discarded one.
fill() {
    local img=$1 bs=$2 k
    k=$(((SIZE - 8192) / bs - 1))  # a block after which one more fits
    [ "$k" -le 3 ] || k=3
    qio "$img" vhdx "write -P 0x5a 1000 5000" \
        "write -P 0x11 $((bs - 700)) 1400" \
        "write -P 0x22 $((k * bs + 512)) $((bs + 4096))" \
        "write -P 0x33 $((SIZE - 3000)) 3000" \
        "write -z $((k * bs + 4096)) 8192" \
        "discard $((bs / 2)) $((bs / 2))"
}

# same_info IMG LABEL: virtual size and cluster size as qemu-img says
same_info() {
    local img=$1 label=$2
    python3 - "$label" <(qemu-img info --output=json "$img") <("$IMGFS" info --output=json "$img") <<'PY' ||
import json, sys
label, q, m = sys.argv[1], json.load(open(sys.argv[2])), json.load(open(sys.argv[3]))
for k in ("format", "virtual-size", "cluster-size"):
    if q.get(k) != m.get(k):
        sys.exit(f"{label}: {k}: qemu-img says {q.get(k)}, imgfs {m.get(k)}")
PY
        fail "imgfs info $label differs from qemu-img info"
}

n=0
for opts in "block_size=1M" "block_size=32M,block_state_zero=off" "block_size=256M" \
    "block_size=32M,log_size=8M" "block_state_zero=on" "subformat=fixed,block_size=8M"; do
    img=$T/d$n.vhdx
    size=$SIZE
    [[ $opts == *fixed* ]] && size=$((40 * MiB + 512))
    qcreate -f vhdx -o "$opts" "$img" "$size"
    bs=$(qemu-img info --output=json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster-size"])')
    if [[ $opts == *fixed* ]]; then
        qio "$img" vhdx "write -P 0x5a 1000 5000" "write -P 0x22 $((bs - 100)) 300"
    else
        SIZE=$size fill "$img" "$bs"
    fi
    qemu_raw "$img" vhdx "$T/want.raw"
    check_cat "$img" "$T/want.raw" "vhdx ($opts)"
    check_cat_ranges "$img" "$T/want.raw" "vhdx ($opts)" "999 5002" "$((bs - 701)) 1402" "$((size - 4097)) 4097"
    same_info "$img" "($opts)"
    check_map_zeros "$img" "vhdx ($opts)"
    n=$((n + 1))
done

echo "== a log entry not yet applied"
img=$T/pending.vhdx
qcreate -f vhdx -o block_size=8M "$img" 64M
qio "$img" vhdx "write -P 0x5a 1M 3M" "write -P 0x11 40M 512"
qemu_raw "$img" vhdx "$T/before.raw"
# Into the first data block's file bytes: 4 KiB of data, then 4 KiB zeroed.
host=$("$IMGFS" map --output=json "$img" | python3 -c '
import json, sys
print(next(e["offset"] for e in json.load(sys.stdin) if e["data"]))')
python3 "$HERE/tools/vhdx_pending_log.py" "$img" $((host + MiB + 4096)) $((host + MiB + 8192))
sum=$(sha256sum <"$img")
"$IMGCAT" "$img" >"$T/view.raw" || fail "imgcat of an image with a pending log failed"
[ "$(sha256sum <"$img")" = "$sum" ] || fail "reading an image with a pending log changed its file"
if qemu-img convert -O raw "$img" "$T/refused.raw" 2>"$T/err"; then
    echo "   (this qemu-img reads such an image read-only: comparing with it too)"
    cmp "$T/refused.raw" "$T/view.raw" || fail "qemu-img reads the image with a pending log otherwise"
else
    grep -q "log that needs to be replayed" "$T/err" || fail "qemu-img refused for another reason: $(cat "$T/err")"
    echo "   qemu-img refuses it read-only: $(head -n1 "$T/err")"
fi
cp "$img" "$T/replayed.vhdx"
qio "$T/replayed.vhdx" vhdx "flush"  # a writable open replays the log
qemu_raw "$T/replayed.vhdx" vhdx "$T/after.raw"
cmp -s "$T/before.raw" "$T/after.raw" && fail "the test's log entry changed nothing (test setup)"
cmp "$T/after.raw" "$T/view.raw" || fail "imgcat of the pending log differs from qemu after its replay"
"$IMGFS" info "$img" >/dev/null || fail "imgfs info refused an image with a pending log"
[ "$(sha256sum <"$img")" = "$sum" ] || fail "imgfs info changed an image with a pending log"
# check -r all replays it, and says so as qemu-img check does (the JSON's
# keys in qemu's order too).
mkdir -p "$T/q" "$T/m"
cp "$img" "$T/q/p.vhdx"
cp "$img" "$T/m/p.vhdx"
q=$(cd "$T/q" && qemu-img check --output=json -r all p.vhdx 2>/dev/null; echo "exit $?")
m=$(cd "$T/m" && "$IMGFS" check --output=json -r all p.vhdx 2>/dev/null; echo "exit $?")
[ "$q" = "$m" ] || fail "check -r all of a pending log: '$m', qemu-img's '$q'"
cmp "$T/after.raw" <("$IMGCAT" "$T/m/p.vhdx") || fail "check -r all replayed otherwise than qemu"

echo "== check, with qemu-img check's verdicts"
qcreate -f vhdx -o block_size=1M "$T/c.vhdx" 16M
qio "$T/c.vhdx" vhdx "write -P 1 0 2M"
# BAT entries set by hand: a block past the end of the file, one inside
# the metadata region, two blocks at one offset, the reserved state 4, a
# partly present block in a disk without a parent.
python3 - "$T/c.vhdx" <<'PY'
import shutil, struct, sys
src = sys.argv[1]
with open(src, "rb") as f:
    f.seek(192 * 1024)
    rt = f.read(65536)
regions = {rt[16 + i * 32:32 + i * 32]: struct.unpack_from("<QI", rt, 32 + i * 32) for i in range(struct.unpack_from("<I", rt, 8)[0])}
bat = regions[bytes.fromhex("6677c22d23f600429d64115e9bfd4a08")][0]
meta = regions[bytes.fromhex("06a27c8b90479a4bb8fe575f050f886e")][0]
with open(src, "rb") as f:
    f.seek(bat)
    e0 = struct.unpack("<Q", f.read(8))[0]
for name, index, value in (("past", 0, (100 << 20) | 6), ("inmeta", 2, meta | 6), ("dup", 1, e0),
                           ("state4", 2, 4), ("state7", 2, (8 << 20) | 7)):
    out = src.replace("c.vhdx", name + ".vhdx")
    shutil.copy(src, out)
    with open(out, "r+b") as f:
        f.seek(bat + 8 * index)
        f.write(struct.pack("<Q", value))
PY
for name in c past inmeta dup state4 state7; do
    qrc=0 mrc=0
    qemu-img check "$T/$name.vhdx" >"$T/q.out" 2>&1 || qrc=$?
    "$IMGFS" check "$T/$name.vhdx" >"$T/m.out" 2>&1 || mrc=$?
    echo "   $name: qemu-img check exit $qrc, imgfs check exit $mrc"
    [ "$qrc" = "$mrc" ] || fail "check $name: imgfs exits $mrc, qemu-img $qrc: $(cat "$T/m.out")"
done

echo "PASS: vhdx read ($n images made by qemu-img, one with a pending log)"
