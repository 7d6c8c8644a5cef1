#!/usr/bin/env bash
# imgfs check against qemu-img check's verdicts on damaged images
# (tools/verdicts.py: a seeded generator, no stored images): imgfs check
# exits as qemu-img check does (save the leaks past the end of the file,
# which only imgfs looks for), check -r all exits 0 only where
# qemu-img check then finds the image clean, and no writing command (bitmap
# --add, amend refcount_bits, snapshot -c, resize) leaves an image worse for
# qemu-img check than it found it. A finding replays with ONLY=seed.
# Then two damages named by hand: a virtual size field that is no multiple
# of 512 (bitmap --add once wrote a bitmap qemu could not read), and a
# snapshot count of 0 with snapshots present (amend refcount_bits once
# turned their leaks into COPIED errors).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir

n=${VERDICT_SEEDS:-300}
python3 "$HERE/tools/verdicts.py" "$IMGFS_BUILD" "$n" 1 "$T/v" || fail "imgfs fell short of qemu-img check's verdict (see above)"
echo "   $n damaged images: qemu's exit codes, repairs clean for qemu, writers never made one worse"

cd "$T"
qemu-img create -q -f qcow2 odd.qcow2 1M
python3 -c 'import struct,sys; f=open("odd.qcow2","r+b"); f.seek(24); f.write(struct.pack(">Q", 21))'
sum=$(sha256sum < odd.qcow2)
rc=0; out=$("$IMGFS" bitmap --add odd.qcow2 b 2>&1) || rc=$?
[[ $rc == 1 && $out == *"not a multiple of 512"* ]] || fail "bitmap --add on a 21-byte size field: exit $rc: $out"
[[ $(sha256sum < odd.qcow2) == "$sum" ]] || fail "bitmap --add changed the image it refused"
qemu-img info odd.qcow2 > /dev/null || fail "qemu-img cannot open the image after the refusal"
[[ $("$IMGFS" info --output=json odd.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') == \
   $(qemu-img info --output=json odd.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') ]] ||
    fail "imgfs and qemu-img disagree on the virtual size of a 21-byte size field"
echo "   size field 21: bitmap --add refused ($(tail -1 <<<"$out" | sed 's/.*: //')), size read as qemu reads it"

# A disk of 0 bytes: qemu cannot store a bitmap for it (an empty table has
# no offset, which it refuses to open); bitmap --add once wrote one.
qemu-img create -q -f qcow2 empty.qcow2 0
sum=$(sha256sum < empty.qcow2)
rc=0; out=$("$IMGFS" bitmap --add empty.qcow2 b 2>&1) || rc=$?
[[ $rc == 1 && $out == *"the disk is empty"* ]] || fail "bitmap --add on a 0-byte disk: exit $rc: $out"
[[ $(sha256sum < empty.qcow2) == "$sum" ]] && qemu-img info empty.qcow2 > /dev/null ||
    fail "bitmap --add on a 0-byte disk changed it"
echo "   a 0-byte disk: bitmap --add refused"

for bits in 1 64; do
    rm -f c0.qcow2
    qemu-img create -q -f qcow2 c0.qcow2 4M
    qemu-io -f qcow2 -c "write -P 1 0 1M" c0.qcow2 > /dev/null
    qemu-img snapshot -c s1 c0.qcow2
    python3 -c 'import struct; f=open("c0.qcow2","r+b"); f.seek(60); f.write(struct.pack(">I", 0))'
    before=0; qemu-img check c0.qcow2 > /dev/null 2>&1 || before=$?
    "$IMGFS" amend -o refcount_bits=$bits c0.qcow2 > /dev/null 2>&1 || true
    after=0; qemu-img check c0.qcow2 > "$T/after" 2>&1 || after=$?
    [[ $before == 3 && $after == 3 ]] || { cat "$T/after" >&2; fail "amend refcount_bits=$bits on a snapshot count of 0: qemu-img check $before -> $after"; }
done
echo "   snapshot count 0: amend refcount_bits=1/64 leaves leaks as leaks"

# Cut short, the image still opens for qemu-img check (what lies past the
# end reads as zeros) and is reported corrupt (2): so it is by imgfs check,
# which once could not open it (1).
qemu-img create -q -f qcow2 cut.qcow2 4M
qemu-io -f qcow2 -c "write -P 1 0 1M" cut.qcow2 > /dev/null
cp cut.qcow2 far.qcow2
truncate -s $((128 * 1024)) cut.qcow2
q=0; qemu-img check cut.qcow2 > q.out 2>&1 || q=$?
rc=0; "$IMGFS" check cut.qcow2 > i.out 2>&1 || rc=$?
[[ $q == 2 && $rc == 2 ]] || fail "cut short: imgfs check exit $rc, qemu-img check exit $q: $(tail -3 i.out)"
echo "   cut short: qemu-img check and imgfs check both exit 2"

# A refcount for cluster 100, far past the end: qemu-img check does not look
# there (0); imgfs check reports the leak, says where it lies, and gives
# the image's end offset as qemu does.
python3 -c 'import struct; f=open("far.qcow2","r+b"); f.seek(0x20000 + 2 * 100); f.write(struct.pack(">H", 1))'
q=0; qemu-img check far.qcow2 > q.out 2>&1 || q=$?
rc=0; "$IMGFS" check far.qcow2 > i.out 2>&1 || rc=$?
[[ $q == 0 && $rc == 3 ]] && grep -qx "Leaked cluster 100 refcount=1 reference=0 (past the end of the file)" i.out ||
    fail "a refcount past the end: imgfs check exit $rc, qemu-img check exit $q: $(cat i.out)"
[[ $(grep "Image end offset" i.out) == $(grep "Image end offset" q.out) ]] ||
    fail "a refcount past the end: end offsets differ: $(grep "Image end offset" i.out q.out)"
"$IMGFS" check -r leaks far.qcow2 > /dev/null 2>&1 && "$IMGFS" check far.qcow2 > /dev/null && qemu-img check far.qcow2 > /dev/null ||
    fail "check -r leaks did not free the refcount past the end"
echo "   a refcount past the end: a leak for imgfs check (qemu-img check: clean), freed by -r leaks; same end offset"
echo "PASS: check_verdicts"
