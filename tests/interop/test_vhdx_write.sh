#!/usr/bin/env bash
# VHDX writes through imagecore, with qemu as the oracle where it can judge:
#  - images made by qemu-img and by imgfs (block sizes 1 and 32 MiB, fixed,
#    a larger log, block_state_zero off) take the same writes through
#    imgwrite and, on a copy, through qemu-io: unaligned data, a write across
#    blocks, zeroed and discarded ranges (part of a block and whole ones),
#    the disk's last bytes. qemu-img check finds ours clean, qemu-img compare
#    finds the two equal, and tools/vhdx_inspect.py finds every field as
#    MS-VHDX says (the log GUID cleared at close, BAT states and offsets).
#  - differencing chains of two and three imgfs-made disks, which qemu
#    cannot open: writes at every level, sector-granular and partial
#    blocks, read back as the content the test computes; the fields (parent
#    locator, parent_linkage = the parent's data write GUID, the bitmaps'
#    sectors) checked against the specification.
#  - a parent written after its child was made: the child refuses writes,
#    naming parent_linkage; reads go on. A missing parent names itself.
#  - a pending log entry: a writable open replays it into the file, as
#    qemu's replay does.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3 cmp
need_tool "$IMGCAT" "$IMGWRITE" "$IMGFS"
INSPECT=$HERE/tools/vhdx_inspect.py
tmpdir

iw() { "$IMGWRITE" "$@" >/dev/null || fail "imgwrite $* failed"; }

# same_writes OURS THEIRS BLOCK SIZE: one list of writes, through imgwrite on
# OURS and qemu-io on THEIRS (discard there: write -z, since qemu's vhdx
# driver ignores discards and imgfs's read as zeros).
same_writes() {
    local ours=$1 theirs=$2 bs=$3 size=$4 k
    k=$(((size - 8192) / bs - 1))
    [ "$k" -le 3 ] || k=3
    iw "$ours" 1000 0x5a 5000
    iw "$ours" $((bs - 700)) 0x11 1400
    iw "$ours" $((k * bs + 512)) 0x22 $((bs + 4096))
    iw "$ours" $((k * bs + 4096)) zero 8192
    iw "$ours" $((bs / 2 + 512)) discard $((bs / 4))
    iw "$ours" $((size - 3000)) 0x33 3000
    iw "$ours" $((k * bs)) discard "$bs"  # a whole block
    iw "$ours" 0 zero "$bs"
    iw "$ours" 100 0x44 10
    qio "$theirs" vhdx "write -P 0x5a 1000 5000" "write -P 0x11 $((bs - 700)) 1400" \
        "write -P 0x22 $((k * bs + 512)) $((bs + 4096))" "write -z $((k * bs + 4096)) 8192" \
        "write -z $((bs / 2 + 512)) $((bs / 4))" "write -P 0x33 $((size - 3000)) 3000" \
        "write -z $((k * bs)) $bs" "write -z 0 $bs" "write -P 0x44 100 10"
}

# judge OURS THEIRS LABEL [FIELD]: FIELD a line vhdx_inspect.py must print
judge() {
    local ours=$1 theirs=$2 label=$3 out
    out=$(qemu-img check "$ours" 2>&1) || fail "qemu-img check $label: $out"
    qemu-img compare -f vhdx -F vhdx "$ours" "$theirs" >/dev/null ||
        fail "$label: imgfs's writes read otherwise than qemu's: $(qemu-img compare "$ours" "$theirs" 2>&1)"
    python3 "$INSPECT" "$ours" >"$T/fields" || fail "$label: $(tail -n1 "$T/fields")"
    if [ -n "${4:-}" ]; then grep -qx "$4" "$T/fields" || fail "$label: no '$4' in: $(cat "$T/fields")"; fi
    echo "   $label: qemu-img check clean, equal to qemu's writes, fields as the specification says"
}

SIZE=$((100 * MiB + 512))
echo "== writes, against qemu-io's"
n=0
for maker in qemu imgfs; do
    for opts in "block_size=1M" "block_size=32M,block_state_zero=off" "subformat=fixed,block_size=8M" \
        "block_size=8M,log_size=4M"; do
        img=$T/w$n.vhdx
        size=$SIZE
        [[ $opts == *fixed* ]] && size=$((40 * MiB))
        if [ "$maker" = qemu ]; then
            qcreate -f vhdx -o "$opts" "$img" "$size"
        else
            "$IMGFS" create -q -f vhdx -o "$opts" "$img" "$size" || fail "imgfs create -o $opts failed"
        fi
        cp "$img" "$T/theirs.vhdx"
        bs=$(qemu-img info --output=json "$img" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster-size"])')
        same_writes "$img" "$T/theirs.vhdx" "$bs" "$size"
        # The whole block that same_writes punched: UNMAPPED, a hole; a
        # fixed disk keeps its blocks.
        k=$(((size - 8192) / bs - 1))
        [ "$k" -le 3 ] || k=3
        punched="block $k unmapped"
        [[ $opts == *fixed* ]] && punched="block $k full"
        judge "$img" "$T/theirs.vhdx" "$maker -o $opts" "$punched"
        n=$((n + 1))
    done
done

echo "== differencing chains"
# model FILE OFF PATTERN LEN: the same write into the expected content
model() {
    python3 - "$@" <<'PY'
import sys
path, off, pat, n = sys.argv[1], int(sys.argv[2], 0), sys.argv[3], int(sys.argv[4], 0)
with open(path, "r+b") as f:
    f.seek(off)
    f.write(bytes(n) if pat in ("zero", "discard") else bytes([int(pat, 0)]) * n)
PY
}
w() { iw "$@"; model "$T/want.raw" "${@:2}"; }
"$IMGFS" create -q -f vhdx -o block_size=1M "$T/base.vhdx" 16M
iw "$T/base.vhdx" 0 0x33 $((16 * MiB))
qemu_raw "$T/base.vhdx" vhdx "$T/want.raw"
"$IMGFS" create -q -f vhdx -b base.vhdx -F vhdx "$T/mid.vhdx"
bs=$("$IMGFS" info --output=json "$T/mid.vhdx" | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster-size"])')
[ "$bs" = $MiB ] || fail "a child made without block_size has $bs-byte blocks, its parent 1 MiB ones"
w "$T/mid.vhdx" 1000 0x44 300                   # within one sector's neighbours
w "$T/mid.vhdx" $((MiB - 100)) 0x55 700        # across blocks of the parent
w "$T/mid.vhdx" $((3 * MiB)) 0x56 $((2 * MiB))  # whole blocks
cmp "$T/want.raw" <("$IMGCAT" "$T/mid.vhdx") || fail "a two-disk chain reads otherwise than computed"
python3 "$INSPECT" "$T/mid.vhdx" "$T/base.vhdx" >"$T/mid.fields" || fail "mid.vhdx: $(tail -n1 "$T/mid.fields")"
grep -q '^relative_path \.\\base\.vhdx$' "$T/mid.fields" || fail "mid.vhdx: relative_path: $(cat "$T/mid.fields")"
"$IMGFS" create -q -f vhdx -o block_size=2M -b mid.vhdx -F vhdx "$T/top.vhdx"
w "$T/top.vhdx" 1100 0x66 10
w "$T/top.vhdx" 1050 zero 20
w "$T/top.vhdx" $((5 * MiB)) 0x77 $((MiB))
w "$T/top.vhdx" $((8 * MiB + 513)) 0x88 4000
w "$T/top.vhdx" $((12 * MiB)) discard $((2 * MiB))  # a whole block: zeros, hiding the parent
w "$T/top.vhdx" $((16 * MiB - 1)) 0x99 1
cmp "$T/want.raw" <("$IMGCAT" "$T/top.vhdx") || fail "a three-disk chain reads otherwise than computed"
python3 "$INSPECT" "$T/top.vhdx" "$T/mid.vhdx" >"$T/top.fields" || fail "top.vhdx: $(tail -n1 "$T/top.fields")"
# Sectors 2 (1050..1110), 10240-12287 of block 0 (5 MiB..6 MiB of a 2 MiB
# block: 1 MiB in), sectors 1-8 of block 4 (8 MiB + 513 .. + 4513), the
# last sector of the disk; block 6 (12 MiB) discarded whole: ZERO, since
# UNMAPPED may show the parent's bytes.
for want in "block 0 partial 2-2" "block 2 partial 2048-4095" "block 4 partial 1-8" "block 7 partial 4095-4095" \
    "block 6 zero"; do
    grep -qx "$want" "$T/top.fields" || fail "top.vhdx: no '$want' in: $(cat "$T/top.fields")"
done
[ "$(grep -c '^block .* \(full\|partial\)' "$T/top.fields")" = 4 ] || fail "top.vhdx: other blocks present: $(cat "$T/top.fields")"
"$IMGFS" check "$T/top.vhdx" >/dev/null || fail "imgfs check top.vhdx"
echo "   chains of 2 and 3 read as computed; fields, linkage and sector bitmaps as the specification says"

echo "== commit and rebase"
cp "$T/base.vhdx" "$T/cbase.vhdx"
cp "$T/mid.vhdx" "$T/cmid.vhdx"
cp "$T/top.vhdx" "$T/ctop.vhdx"
"$IMGFS" rebase -q -u -b cmid.vhdx -F vhdx "$T/ctop.vhdx" || fail "rebase -u of ctop"
"$IMGFS" rebase -q -u -b cbase.vhdx -F vhdx "$T/cmid.vhdx" || fail "rebase -u of cmid"
python3 "$INSPECT" "$T/ctop.vhdx" "$T/cmid.vhdx" >"$T/ctop.fields" || fail "rebase -u: $(tail -n1 "$T/ctop.fields")"
grep -q '^relative_path \.\\cmid\.vhdx$' "$T/ctop.fields" || fail "rebase -u: $(cat "$T/ctop.fields")"
cmp "$T/want.raw" <("$IMGCAT" "$T/ctop.vhdx") || fail "ctop reads otherwise after rebase -u onto copies"
"$IMGFS" commit -q "$T/ctop.vhdx" || fail "commit of ctop into cmid"
cmp "$T/want.raw" <("$IMGCAT" "$T/cmid.vhdx") || fail "cmid does not hold what ctop showed after the commit"
cmp "$T/want.raw" <("$IMGCAT" "$T/ctop.vhdx") || fail "ctop reads otherwise after its commit"
python3 "$INSPECT" "$T/ctop.vhdx" "$T/cmid.vhdx" >"$T/ctop.fields" || fail "ctop after commit: $(tail -n1 "$T/ctop.fields")"
grep -q '^block' "$T/ctop.fields" && fail "ctop still holds blocks after its commit: $(cat "$T/ctop.fields")"
"$IMGFS" commit -q -b cbase.vhdx "$T/ctop.vhdx" || fail "commit of ctop into cbase"
cmp "$T/want.raw" <("$IMGCAT" "$T/cbase.vhdx") || fail "cbase does not hold the chain's content after commit -b"
qemu-img check "$T/cbase.vhdx" >/dev/null || fail "qemu-img check cbase after the commit"
# A safe rebase onto a parent with other content keeps what the child shows.
"$IMGFS" create -q -f vhdx -o block_size=1M "$T/other.vhdx" 16M
iw "$T/other.vhdx" 0 0x70 $((16 * MiB))
"$IMGFS" rebase -q -b other.vhdx -F vhdx "$T/cmid.vhdx" || fail "rebase of cmid onto other"
cmp "$T/want.raw" <("$IMGCAT" "$T/cmid.vhdx") || fail "cmid reads otherwise after a safe rebase"
python3 "$INSPECT" "$T/cmid.vhdx" "$T/other.vhdx" >/dev/null || fail "cmid after rebase: $(python3 "$INSPECT" "$T/cmid.vhdx" "$T/other.vhdx" | tail -n1)"
echo "   rebase -u, commit into the parent and deeper (the child emptied), safe rebase: content kept, links right"

echo "== a parent written after its child was made"
iw "$T/mid.vhdx" 0 0x12 512  # changes mid's data write GUID
if "$IMGWRITE" "$T/top.vhdx" 0 0x13 512 2>"$T/err"; then fail "a child whose parent changed took a write"; fi
grep -q parent_linkage "$T/err" || fail "the refusal does not name parent_linkage: $(cat "$T/err")"
"$IMGCAT" "$T/top.vhdx" 0 4096 >/dev/null || fail "the child of a changed parent cannot be read"
rm "$T/base.vhdx"
if "$IMGCAT" "$T/mid.vhdx" 0 512 >"$T/out" 2>&1; then fail "a child without its parent opened"; fi
grep -q "base.vhdx" "$T/out" || fail "the missing parent is not named: $(cat "$T/out")"
echo "   refused with the reason; a missing parent named"

echo "== a pending log, replayed by a writable open"
img=$T/pending.vhdx
qcreate -f vhdx -o block_size=8M "$img" 64M
qio "$img" vhdx "write -P 0x5a 1M 3M"
host=$("$IMGFS" map --output=json "$img" | python3 -c '
import json, sys
print(next(e["offset"] for e in json.load(sys.stdin) if e["data"]))')
python3 "$HERE/tools/vhdx_pending_log.py" "$img" $((host + MiB + 4096)) $((host + MiB + 8192))
cp "$img" "$T/theirs.vhdx"
qio "$T/theirs.vhdx" vhdx "flush"
iw "$img" $((40 * MiB)) 0x11 512
qio "$T/theirs.vhdx" vhdx "write -P 0x11 40M 512"
judge "$img" "$T/theirs.vhdx" "replayed at a writable open"

echo "== resize: grow past a cut-short block, shrink, grow again"
img=$T/r.vhdx
qcreate -f vhdx -o block_size=1M "$img" $((10 * MiB + 512))
qio "$img" vhdx "write -P 7 0 $((10 * MiB + 512))"
"$IMGFS" resize -q "$img" 20M || fail "grow"
qemu-img check "$img" >/dev/null || fail "qemu-img check after a grow"
qio "$img" vhdx "read -P 7 0 $((10 * MiB + 512))" "read -P 0 $((10 * MiB + 512)) $((10 * MiB - 512))"
"$IMGFS" resize -q --shrink "$img" 5M || fail "shrink"
[ "$(vsize "$img")" = $((5 * MiB)) ] || fail "size after the shrink: $(vsize "$img")"
"$IMGFS" resize -q "$img" 12M || fail "grow after the shrink"
qemu-img check "$img" >/dev/null || fail "qemu-img check after shrink and grow"
qio "$img" vhdx "read -P 7 0 $((5 * MiB))" "read -P 0 $((5 * MiB)) $((7 * MiB))"
python3 "$INSPECT" "$img" >/dev/null || fail "after resizes: $(python3 "$INSPECT" "$img" | tail -n1)"
if "$IMGFS" resize -q "$img" 2T 2>"$T/err"; then fail "a grow past the BAT region's room succeeded"; fi
grep -q "BAT region" "$T/err" || fail "the refused grow does not say why: $(cat "$T/err")"
echo "   grown, shrunk and grown: zeros past each old end, qemu-img check clean"

echo "PASS: vhdx write ($n images written against qemu, chains of 2 and 3, linkage, replay)"
