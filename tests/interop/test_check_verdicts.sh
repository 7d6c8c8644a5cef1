#!/usr/bin/env bash
# imgfs check against qemu-img check's verdicts on damaged images
# (tools/verdicts.py: a seeded generator, no stored images): imgfs check
# finds at least what qemu-img check finds, check -r all exits 0 only where
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
echo "   $n damaged images: verdicts at least qemu's, repairs clean for qemu, writers never made one worse"

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
echo "PASS: check_verdicts"
