#!/usr/bin/env bash
# VMDK read path against qemu: every subformat qemu-img makes, with data at
# unaligned offsets, zeroed grains and writes across extent boundaries, read
# back through imagecore byte for byte like `qemu-img convert -O raw`, with
# the map of `qemu-img map` and the JSON and text of `qemu-img info`
# (actual size compared with what the files hold). Then the layouts qemu
# reads but cannot make (vmfsSparse, seSparse, a stream whose grain
# directory is only in its footer), chains (the three-level
# gold <- dept <- user chain, qcow2 on vmdk), and hand-written descriptors:
# spaces in names, RDONLY and ZERO extents, a VMFS extent with a start
# offset, CRLF line ends, bytes that are not UTF-8, a Windows parent path,
# a parentCID that does not match, a missing extent file.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io python3 cmp dd tr head stat
need_tool "$IMGCAT" "$IMGMAP" "$IMGFS"
tmpdir
MAKE=$HERE/tools/make_vmdk.py
cd "$T"

# info_same IMG [--backing-chain]: imgfs info agrees with qemu-img info
# (JSON key by key; actual-size is each file's blocks, checked apart).
info_same() {
    local img=$1
    shift
    qemu-img info --output=json "$@" "$img" >"$T/q.json" || fail "qemu-img info $img failed"
    "$IMGFS" info --output=json "$@" "$img" >"$T/i.json" 2>"$T/i.err" || fail "imgfs info $img failed: $(cat "$T/i.err")"
    python3 - "$T/q.json" "$T/i.json" "$img" <<'PY' || fail "imgfs info --output=json $img differs from qemu-img"
import json, sys
q, i = (json.load(open(p)) for p in sys.argv[1:3])
def strip(x):
    if isinstance(x, list): return [strip(e) for e in x]
    x = dict(x); x.pop("actual-size", None); return x
if strip(q) != strip(i):
    print("qemu :", json.dumps(strip(q), indent=1)); print("imgfs:", json.dumps(strip(i), indent=1)); sys.exit(1)
if list(strip(q if isinstance(q, dict) else q[0])) != list(strip(i if isinstance(i, dict) else i[0])):
    print("key order differs"); sys.exit(1)
PY
    diff <(qemu-img info "$@" "$img" | grep -v '^disk size:') <("$IMGFS" info "$@" "$img" | grep -v '^disk size:') ||
        fail "imgfs info $img (text) differs from qemu-img"
}

# verify IMG LABEL GRAIN: content, partial reads and map as qemu has them
verify() {
    local img=$1 label=$2 gs=$3 S ranges
    S=$(vsize "$img")
    qemu_raw "$img" vmdk "$T/expected.raw"
    check_cat "$img" "$T/expected.raw" "$label"
    mapfile -t ranges < <(standard_ranges "$gs" "$S")
    check_cat_ranges "$img" "$T/expected.raw" "$label" "${ranges[@]}"
    # qemu maps a flat extent as data throughout; imgfs reports the holes
    # of the flat file as zeros (SEEK_HOLE finds them), which the reads
    # above already showed to be zeros. Sparse extents map as qemu's.
    if [[ $(qemu-img info --output=json "$img") != *'"format": "FLAT"'* ]]; then check_map "$img" vmdk "$label"; fi
    rm -f "$T/expected.raw"
}

# writes IMG SIZE: qemu-io puts data at unaligned offsets and a zeroed run
writes() {
    local s=$2
    qio "$1" vmdk "write -P 0x5a 1000 70000" "write -P 0x33 $((s / 2 - 3000)) 9000" \
        "write -z $((s / 4)) 131072" "write -P 0x71 $((s - 700)) 700" "write -P 0x72 $((s / 4 + 65536)) 512"
}

echo "== every subformat qemu-img makes"
for sub in monolithicSparse monolithicFlat twoGbMaxExtentSparse twoGbMaxExtentFlat; do
    for opts in "" "zeroed_grain=on" "adapter_type=lsilogic,hwversion=6" "adapter_type=ide,toolsversion=10240"; do
        case $sub/$opts in *Flat/zeroed*) continue ;; esac
        img=m-$sub${opts:+-${opts//[=,]/_}}.vmdk
        qcreate -f vmdk -o "subformat=$sub${opts:+,$opts}" "$img" 24M
        writes "$img" $((24 * MiB))
        verify "$img" "$img" 65536
        info_same "$img"
    done
done

echo "== several extents: twoGbMaxExtent* across the 2 GiB extent boundary"
for sub in twoGbMaxExtentSparse twoGbMaxExtentFlat; do
    img=big-$sub.vmdk
    qcreate -f vmdk -o "subformat=$sub" "$img" 2100M
    qio "$img" vmdk "write -P 0x44 $((2048 * MiB - 5000)) 10000" "write -P 0x45 7 3" "write -P 0x46 $((2100 * MiB - 100)) 100"
    S=$(vsize "$img")
    qemu_raw "$img" vmdk "$T/expected.raw"
    check_cat_ranges "$img" "$T/expected.raw" "$img" "$((2048 * MiB - 6000)) 12000" "0 4096" "$((S - 4096)) 4096" \
        "$((1024 * MiB)) 65536"
    [[ $sub == *Flat ]] || check_map "$img" vmdk "$img"
    info_same "$img"
    if [[ $sub == twoGbMaxExtentSparse ]]; then
        # Its first extent opened alone (it has room for a descriptor but
        # none in it; qemu-img 7.2 refuses it): the first 2 GiB of the disk.
        cmp <(slice "$T/expected.raw" $((2048 * MiB - 5000)) 5000) <("$IMGCAT" "${img%.vmdk}-s001.vmdk" $((2048 * MiB - 5000)) 5000) ||
            fail "${img%.vmdk}-s001.vmdk alone does not read as the first extent of $img"
    fi
    rm -f "$T/expected.raw"
done

echo "== streamOptimized (compressed grains): from qemu-img convert, and with the directory in the footer"
head -c $((3 * MiB)) /dev/urandom >src.raw
dd if=/dev/zero of=src.raw bs=1M seek=20 count=0 status=none
pattern_into src.raw $((9 * MiB + 77)) 0x61 100000
pattern_into src.raw $((19 * MiB)) 0x00 4096
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized src.raw so.vmdk || fail "qemu-img convert to streamOptimized"
verify so.vmdk so.vmdk 65536
info_same so.vmdk
cmp src.raw <("$IMGCAT" so.vmdk) || fail "so.vmdk does not read as the raw file it was made from"
python3 "$MAKE" stream "$T"
verify stream.vmdk stream.vmdk 65536
info_same stream.vmdk

echo "== vmfsSparse (COWD) and seSparse extents, as ESX writes them"
python3 "$MAKE" cowd "$T"
python3 "$MAKE" sesparse "$T"
verify cowd.vmdk cowd.vmdk 4096
verify se.vmdk se.vmdk 4096
info_same cowd.vmdk
info_same se.vmdk

echo "== the three-level chain gold <- dept <- user, and qcow2 on vmdk"
qcreate -f vmdk base_os_gold.vmdk 64M
qio base_os_gold.vmdk vmdk "write -P 0x11 0 1M" "write -P 0x12 $((40 * MiB + 3)) 70000"
qcreate -f vmdk -b base_os_gold.vmdk -F vmdk dept_dev.vmdk
qio dept_dev.vmdk vmdk "write -P 0x21 $((512 * 1024 + 1)) 1M" "write -z $((40 * MiB)) 65536"
qcreate -f vmdk -b dept_dev.vmdk -F vmdk user_alice.vmdk
qio user_alice.vmdk vmdk "write -P 0x31 100 200" "write -P 0x32 $((63 * MiB)) 1M"
for img in base_os_gold.vmdk dept_dev.vmdk user_alice.vmdk; do
    verify "$img" "$img" 65536
    info_same "$img"
done
info_same user_alice.vmdk --backing-chain
qcreate -f qcow2 -b user_alice.vmdk -F vmdk top.qcow2
qio top.qcow2 qcow2 "write -P 0x41 $((2 * MiB - 1)) 3"
qemu_raw top.qcow2 qcow2 "$T/expected.raw"
check_cat top.qcow2 "$T/expected.raw" top.qcow2
info_same top.qcow2 --backing-chain

echo "== hand-written descriptors"
# spaces in names, RDONLY, ZERO, FLAT with an offset, CRLF, non-UTF-8 bytes
head -c $((2 * MiB)) /dev/urandom >"flat part.bin"
head -c $((1 * MiB)) /dev/urandom >"second part.bin"
printf '# Disk DescriptorFile\r\nversion=1\r\nencoding="windows-1252"\r\nCID=0badc0de\r\nparentCID=ffffffff\r\ncreateType="custom"\r\n\r\n# Extent description\r\nRW 2048 FLAT "flat part.bin" 1024\r\nRDONLY 1024 ZERO\r\nRW 1024 VMFS "second part.bin" 1024\r\n\r\n#DDB\r\nddb.comment = "caf\351"\r\n' >custom.vmdk
{
    dd if="flat part.bin" bs=512 skip=1024 count=2048 status=none
    head -c $((512 * 1024)) /dev/zero
    dd if="second part.bin" bs=512 skip=1024 count=1024 status=none
} >custom.expected
cmp custom.expected <("$IMGCAT" custom.vmdk) || fail "custom.vmdk (FLAT with offset, ZERO, VMFS with offset) misread"
"$IMGFS" info custom.vmdk | grep -q "create type: custom" || fail "custom.vmdk: create type not shown"
"$IMGFS" info --output=json custom.vmdk | python3 -c 'import json,sys; d=json.load(sys.stdin); e=d["format-specific"]["data"]["extents"]; assert [x["format"] for x in e]==["FLAT","ZERO","VMFS"], e' ||
    fail "custom.vmdk: extents not listed"
echo "   FLAT and VMFS extents with start offsets, RDONLY ZERO, CRLF, non-UTF-8 bytes read right"

# a Windows parent path: found by its file name beside the child
mkdir win && cp base_os_gold.vmdk win/
qemu-img create -q -f vmdk -b base_os_gold.vmdk -F vmdk win/child.vmdk
python3 - win/child.vmdk <<'PY'
import sys
# In place: the embedded descriptor is NUL-padded; the longer hint takes
# some of the padding, so nothing after it moves.
p = sys.argv[1]; b = bytearray(open(p, 'rb').read())
i = b.index(b'parentFileNameHint="') + len('parentFileNameHint="'); j = b.index(b'"', i)
new = rb'C:\VMs\Gold\base_os_gold.vmdk'
end = b.index(b'\0', j)
text = b[i:j]
b[i:end + len(new) - len(text)] = new + b[j:end]
open(p, 'wb').write(b)
PY
grep -aq 'C:\\VMs\\Gold\\base_os_gold.vmdk' win/child.vmdk || fail "test setup: the hint was not rewritten"
qemu_raw base_os_gold.vmdk vmdk gold.raw
cmp gold.raw <("$IMGCAT" win/child.vmdk) ||
    fail "win/child.vmdk does not read through its parent found beside it"
echo "   a parent named C:\\VMs\\Gold\\base_os_gold.vmdk is found beside the child"

# a parentCID that does not match the parent's CID: read, with a warning
cp base_os_gold.vmdk moved_gold.vmdk
qemu-img create -q -f vmdk -b moved_gold.vmdk -F vmdk stale.vmdk
qio moved_gold.vmdk vmdk "write -P 0x13 0 512"  # changes the parent's CID
"$IMGFS" info stale.vmdk >/dev/null 2>"$T/warn" || fail "imgfs info stale.vmdk failed"
grep -q "parentCID .* does not match CID" "$T/warn" || fail "imgfs info does not warn of the parentCID mismatch: $(cat "$T/warn")"
"$IMGFS" info base_os_gold.vmdk 2>&1 >/dev/null | grep -q . && fail "imgfs info warns on a disk without a parent"
echo "   $(head -1 "$T/warn")"

# a missing extent file: refused, naming it
printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "gone-flat.vmdk" 0\n' >missing.vmdk
if "$IMGCAT" missing.vmdk >/dev/null 2>"$T/err"; then fail "missing.vmdk read without its extent"; fi
grep -q "gone-flat.vmdk" "$T/err" || fail "the error does not name the missing extent: $(cat "$T/err")"
echo "   $(head -1 "$T/err")"

# refusals that name the feature
printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="vmfsRaw"\nRW 2048 VMFSRAW "/dev/sdz"\n' >raw-device.vmdk
"$IMGCAT" raw-device.vmdk >/dev/null 2>"$T/err" && fail "a VMFSRAW extent was read"
grep -q "extent type VMFSRAW" "$T/err" || fail "VMFSRAW refusal does not name it: $(cat "$T/err")"
printf '# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\ncreateType="custom"\nNOACCESS 2048 FLAT "flat part.bin" 0\n' >noaccess.vmdk
"$IMGCAT" noaccess.vmdk >/dev/null 2>"$T/err" && fail "a NOACCESS extent was read"
grep -q "NOACCESS" "$T/err" || fail "NOACCESS refusal does not name it: $(cat "$T/err")"
echo "   VMFSRAW and NOACCESS extents refused by name"
echo "PASS: vmdk_read"
