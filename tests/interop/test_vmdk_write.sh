#!/usr/bin/env bash
# VMDK write path against qemu: writes through imagecore (unaligned, across
# grain and extent boundaries, zeroing and discarding, into a child that
# copies on write from its parent) into images qemu-img made, for every
# writable subformat. Afterwards `qemu-img check` finds them clean,
# `qemu-img compare` finds them equal to the expected content, and the
# descriptor's CID has changed (a child made before sees it). Commit into
# a vmdk parent (and into a deeper one) leaves the content and relinks the
# child to its parent's new CID. Every writable subformat grows (tables
# preallocated as qemu-img lays them out, extent files added for
# twoGbMaxExtent*), and qemu writes and reads the grown disk; with
# --shrink each shrinks (the extent files cut off removed), keeps what it
# keeps, and shows zeros where it grows again. The layouts
# served read-only (streamOptimized, vmfsSparse, seSparse) refuse writes
# with the reason and are left untouched.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io python3 cmp dd tr head stat
need_tool "$IMGCAT" "$IMGWRITE" "$IMGFS"
tmpdir
cd "$T"

cid_of() { qemu-img info --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["cid"])'; }
iw() { "$IMGWRITE" "$@" || fail "imgwrite $*"; }
# zero_into FILE OFF LEN: the model of a zeroing write
zero_into() { dd if=/dev/zero of="$1" bs=64K seek="$2" count="$3" oflag=seek_bytes iflag=count_bytes conv=notrunc status=none; }
# check_written IMG EXPECTED LABEL
check_written() {
    local out
    out=$(qemu-img check -f vmdk "$1" 2>&1) || fail "qemu-img check $3: $out"
    out=$(qemu-img compare -f vmdk -F raw "$1" "$2" 2>&1) || fail "qemu-img compare $3: $out"
    cmp "$2" <("$IMGCAT" "$1") || fail "$3 reads back differently through imgfs"
    echo "   $3: qemu-img check clean, compare equal"
}

# writes IMG EXPECTED SIZE GRAIN: the same writes into the image (imgfs)
# and into the expected raw file
writes() {
    local img=$1 exp=$2 s=$3 g=$4 w
    for w in "7 0x61 100" "$((g - 3)) 0x62 10" "$((5 * g + 1)) 0x63 $((3 * g))" "$((s / 2 - 1000)) 0x64 3000" \
        "$((s - 5)) 0x65 5" "1000 0x66 70000"; do
        read -r off pat len <<<"$w"
        iw "$img" "$off" "$pat" "$len"
        pattern_into "$exp" "$off" "$pat" "$len"
    done
    iw "$img" $((2 * g)) zero $((2 * g))       # whole grains
    zero_into "$exp" $((2 * g)) $((2 * g))
    iw "$img" $((s / 2 + 17)) zero 1000        # inside one grain
    zero_into "$exp" $((s / 2 + 17)) 1000
    iw "$img" $((6 * g)) discard "$g"
    zero_into "$exp" $((6 * g)) "$g"
}

echo "== every writable subformat, into data qemu wrote"
for sub in monolithicSparse monolithicSparse/zeroed_grain=on twoGbMaxExtentSparse monolithicFlat twoGbMaxExtentFlat; do
    opts=subformat=${sub%%/*}
    [[ $sub == */* ]] && opts+=,${sub#*/}
    img=w-${sub//[\/=]/_}.vmdk
    qcreate -f vmdk -o "$opts" "$img" 8M
    qio "$img" vmdk "write -P 0x11 0 1M" "write -P 0x12 $((5 * MiB + 99)) 200000"
    qemu_raw "$img" vmdk "$img.raw"
    before=$(cid_of "$img")
    writes "$img" "$img.raw" $((8 * MiB)) 65536
    check_written "$img" "$img.raw" "$img"
    [[ $(cid_of "$img") != "$before" ]] || fail "$img: the CID did not change with the first write"
done

echo "== across the 2 GiB extent boundary of twoGbMaxExtent*"
for sub in twoGbMaxExtentSparse twoGbMaxExtentFlat; do
    img=big-$sub.vmdk
    qcreate -f vmdk -o "subformat=$sub" "$img" 2100M
    iw "$img" $((2048 * MiB - 5000)) 0x71 10000
    iw "$img" $((2100 * MiB - 1)) 0x72 1
    out=$(qemu-img check -f vmdk "$img" 2>&1) || fail "qemu-img check $img: $out"
    qemu-io -f vmdk -c "read -P 0x71 $((2048 * MiB - 5000)) 10000" -c "read -P 0 $((2048 * MiB + 5000)) 60000" \
        -c "read -P 0x72 $((2100 * MiB - 1)) 1" "$img" | grep -q "Pattern verification failed" &&
        fail "$img: qemu reads other bytes across the extent boundary"
    echo "   $img: qemu reads the bytes across the boundary"
done

echo "== a child copies on write from its parent; the parent's CID change shows"
qcreate -f vmdk parent.vmdk 8M
qio parent.vmdk vmdk "write -P 0x21 0 8M"
qcreate -f vmdk -b parent.vmdk -F vmdk child.vmdk
qemu_raw child.vmdk vmdk child.raw
writes child.vmdk child.raw $((8 * MiB)) 65536
check_written child.vmdk child.raw child.vmdk
"$IMGFS" info child.vmdk 2>&1 >/dev/null | grep -q . && fail "imgfs info warns on a child whose parent is unchanged"
iw parent.vmdk 0 0x22 512
"$IMGFS" info child.vmdk 2>&1 >/dev/null | grep -q "parentCID .* does not match" ||
    fail "the child does not notice its parent changed"
if "$IMGWRITE" child.vmdk 0 0x23 1 2>"$T/err"; then fail "a child whose parent changed took a write"; fi
grep -q "does not match" "$T/err" || fail "the refusal does not say why: $(cat "$T/err")"
echo "   the child of a changed parent is read-only: $(head -1 "$T/err")"

echo "== commit into a vmdk parent empties the child and relinks it (qemu-img leaves every grain in the child)"
qcreate -f vmdk cbase.vmdk 64M
qio cbase.vmdk vmdk "write -P 0x11 0 8M"
qcreate -f vmdk -b cbase.vmdk -F vmdk cmid.vmdk
qio cmid.vmdk vmdk "write -P 0x22 1M 3M"
qcreate -f vmdk -b cmid.vmdk -F vmdk ctop.vmdk
qio ctop.vmdk vmdk "write -P 0x33 $((2 * MiB + 5)) 100000" "write -z $((5 * MiB)) 131072"
qemu_raw ctop.vmdk vmdk c.raw
before=$(stat -c %s ctop.vmdk)
"$IMGFS" commit ctop.vmdk >/dev/null || fail "imgfs commit ctop.vmdk"
qemu-img compare -f vmdk -F raw cmid.vmdk c.raw >/dev/null || fail "cmid.vmdk does not hold the committed content"
qemu-img compare -f vmdk -F raw ctop.vmdk c.raw >/dev/null || fail "ctop.vmdk reads differently after the commit"
[[ $(qemu-img map --output=json ctop.vmdk | python3 -c 'import json,sys; print(sum(1 for e in json.load(sys.stdin) if e["depth"] == 0 and e["present"]))') == 0 ]] ||
    fail "ctop.vmdk still holds grains after the commit"
[[ $(stat -c %s ctop.vmdk) -lt $before ]] || fail "ctop.vmdk did not shrink when emptied"
"$IMGFS" commit -b cbase.vmdk ctop.vmdk >/dev/null || fail "imgfs commit -b cbase.vmdk"
qemu-img compare -f vmdk -F raw cbase.vmdk c.raw >/dev/null || fail "cbase.vmdk does not hold the committed content"
for f in cbase cmid ctop; do
    out=$(qemu-img check "$f.vmdk" 2>&1) || fail "qemu-img check $f.vmdk after commit: $out"
done
"$IMGFS" info --backing-chain ctop.vmdk 2>&1 >/dev/null | grep -q . && fail "a parentCID mismatch after the commits"
echo "   committed twice; the children point at their parents' new CIDs; qemu-img check clean"

echo "== resize: every writable subformat grows and, with --shrink, shrinks (qemu-img 7.2 can neither)"
for sub in monolithicSparse monolithicSparse/zeroed_grain=on monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
    opts=subformat=${sub%%/*}
    [[ $sub == */* ]] && opts+=,${sub#*/}
    img=r-${sub//[\/=]/_}.vmdk
    qcreate -f vmdk -o "$opts" "$img" 100M
    qio "$img" vmdk "write -P 0x51 $((100 * MiB - 4096)) 4096" "write -P 0x52 0 1000"
    "$IMGFS" resize "$img" +4400M >/dev/null || fail "imgfs resize $img +4400M"
    "$IMGFS" resize "$img" +10M >/dev/null || fail "imgfs resize $img +10M"
    out=$(qemu-img check "$img" 2>&1) || fail "qemu-img check $img after resize: $out"
    [[ $(vsize "$img") == $((4510 * MiB)) ]] || fail "$img: virtual size $(vsize "$img") after the resizes"
    qemu-io -f vmdk -c "read -P 0x51 $((100 * MiB - 4096)) 4096" -c "read -P 0x52 0 1000" -c "read -P 0 $((100 * MiB)) 1M" \
        -c "write -P 0x53 $((4510 * MiB - 512)) 512" -c "read -P 0x53 $((4510 * MiB - 512)) 512" "$img" |
        grep -q "verification failed" && fail "$img: qemu reads other bytes after the resize"
    cmp <(head -c 512 /dev/zero | tr '\000' '\123') <("$IMGCAT" "$img" $((4510 * MiB - 512)) 512) ||
        fail "$img: imgfs does not read what qemu wrote into the grown range"
    echo "   $img: 100M -> 4510M, qemu-img check clean, qemu writes and reads the new end"
done
ls r-twoGbMaxExtentSparse-s003.vmdk r-twoGbMaxExtentFlat-f003.vmdk >/dev/null || fail "twoGbMaxExtent* did not gain a third extent"
for sub in monolithicSparse monolithicSparse/zeroed_grain=on monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
    img=r-${sub//[\/=]/_}.vmdk
    qio "$img" vmdk "write -P 0x54 $((2100 * MiB)) 65536" "write -P 0x55 $((60 * MiB)) 4096"
    if "$IMGFS" resize "$img" 3000M >/dev/null 2>&1; then fail "$img shrank without --shrink"; fi
    "$IMGFS" resize --shrink "$img" 3000M >/dev/null || fail "imgfs resize --shrink $img 3000M"
    "$IMGFS" resize --shrink "$img" 80M >/dev/null || fail "imgfs resize --shrink $img 80M"
    out=$(qemu-img check "$img" 2>&1) || fail "qemu-img check $img after the shrinks: $out"
    [[ $(vsize "$img") == $((80 * MiB)) ]] || fail "$img: virtual size $(vsize "$img") after the shrinks"
    "$IMGFS" resize "$img" 2200M >/dev/null || fail "imgfs resize $img 2200M after the shrinks"
    out=$(qemu-img check "$img" 2>&1) || fail "qemu-img check $img after growing again: $out"
    qemu-io -f vmdk -c "read -P 0x55 $((60 * MiB)) 4096" -c "read -P 0x52 0 1000" -c "read -P 0 $((2100 * MiB)) 65536" \
        -c "read -P 0 $((80 * MiB)) 1M" "$img" | grep -q "verification failed" &&
        fail "$img: after shrink and growth, kept bytes changed or cut ones came back"
    cmp <(head -c 65536 /dev/zero) <("$IMGCAT" "$img" $((2100 * MiB)) 65536) || fail "$img: imgfs shows cut bytes again"
done
[[ ! -e r-twoGbMaxExtentSparse-s003.vmdk && ! -e r-twoGbMaxExtentFlat-f003.vmdk ]] || fail "the extent files cut off were not removed"
echo "   every subformat: shrunk to 3000M and 80M, grown to 2200M; kept bytes kept, cut ones zeros; check clean"

echo "== imgfs check says what qemu-img check says, and more"
for img in w-monolithicSparse.vmdk w-twoGbMaxExtentFlat.vmdk child.vmdk cbase.vmdk; do
    diff <(qemu-img check --output=json "$img" 2>/dev/null) <("$IMGFS" check --output=json "$img" 2>/dev/null) ||
        fail "imgfs check --output=json $img differs from qemu-img's"
done
cp w-monolithicSparse.vmdk damaged.vmdk
python3 - damaged.vmdk <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], 'rb').read())
gd = struct.unpack_from('<Q', b, 56)[0]
gt = struct.unpack_from('<I', b, gd * 512)[0]
struct.pack_into('<I', b, gt * 512 + 3 * 4, 0x7fffff00)   # grain 3 far past the end
open(sys.argv[1], 'wb').write(b)
PY
qrc=0; qemu-img check damaged.vmdk >/dev/null 2>"$T/q.err" || qrc=$?
irc=0; "$IMGFS" check damaged.vmdk >/dev/null 2>"$T/i.err" || irc=$?
[[ $qrc == "$irc" ]] || fail "damaged.vmdk: imgfs check exits $irc, qemu-img $qrc"
grep -q "ERROR: cluster offset for sector 384 points after EOF" "$T/i.err" || fail "imgfs check: $(cat "$T/i.err")"
grep -q "redundant grain table 0 .* differs" "$T/i.err" || fail "imgfs check does not compare the redundant table: $(cat "$T/i.err")"
"$IMGFS" check child.vmdk 2>"$T/i.err" >/dev/null || fail "imgfs check child.vmdk failed"
grep -q "Warning: .*parentCID .* does not match" "$T/i.err" || fail "imgfs check does not report the stale parentCID: $(cat "$T/i.err")"
rc=0; "$IMGFS" check -r all w-monolithicSparse.vmdk >/dev/null 2>&1 || rc=$?
[[ $rc == 63 ]] || fail "imgfs check -r all on a vmdk exits $rc (qemu-img: 63)"
echo "   exit codes and JSON as qemu-img's; the redundant table and the parentCID checked too"

echo "== read-only layouts refuse writes with the reason"
head -c $((1 * MiB)) /dev/urandom >s.raw
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized s.raw so.vmdk
python3 "$HERE/tools/make_vmdk.py" cowd "$T"
python3 "$HERE/tools/make_vmdk.py" sesparse "$T"
files_sum() { local f; for f in "$1" "${1%.vmdk}"-*.vmdk; do if [[ -f $f ]]; then cat "$f"; fi; done | sha256sum; }
for img in so.vmdk cowd.vmdk se.vmdk; do
    sum=$(files_sum "$img")
    if "$IMGWRITE" "$img" 0 0x31 512 2>"$T/err"; then fail "$img took a write"; fi
    grep -qE "served read-only" "$T/err" || fail "$img: refusal without the reason: $(cat "$T/err")"
    [[ $(files_sum "$img") == "$sum" ]] || fail "$img was changed by a refused write"
    echo "   $img: $(head -1 "$T/err")"
done
echo "PASS: vmdk_write"
