#!/usr/bin/env bash
# VMDK writes never land on metadata. A grain-table entry that points into
# the header, the descriptor or a grain table (made by patching images qemu
# made) makes the extent take no more writes, with the reason:
#  - at open, where the extent has few tables (they are all read then);
#  - at the first write that would land there, for a larger extent (EIO
#    for that write; read-only after).
# Either way the file is left as it was (but for the descriptor's CID,
# which the first write of an open changes before anything else).
# And a grow never shows old grains: with a capacity field patched smaller,
# a resize shows zeros past the old end, where qemu reads zeros too.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3 cmp
need_tool "$IMGCAT" "$IMGWRITE" "$IMGFS"
tmpdir
cd "$T"

# point IMG GRAIN SECTOR: the primary grain-table entry of GRAIN set to
# SECTOR ("table": the sector of that grain table itself)
point() {
    python3 - "$@" <<'EOF'
import struct, sys
path, grain, to = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(path, "r+b") as f:
    h = f.read(512)
    gtes, gd = struct.unpack_from("<I", h, 44)[0], struct.unpack_from("<Q", h, 56)[0]
    f.seek(gd * 512 + (grain // gtes) * 4)
    gt = struct.unpack("<I", f.read(4))[0]
    sector = gt if to == "table" else int(to, 0)
    f.seek(gt * 512 + (grain % gtes) * 4)
    f.write(struct.pack("<I", sector))
EOF
}
# capacity IMG SECTORS: the header's capacity field
capacity() {
    python3 -c 'import struct,sys; f=open(sys.argv[1],"r+b"); f.seek(12); f.write(struct.pack("<Q", int(sys.argv[2])))' "$@"
}

# expect_refused IMG WHAT OFFSET: a write at OFFSET fails naming the overlap,
# and leaves the file as it was
expect_refused() {
    local img=$1 what=$2 off=$3 rc=0 out
    cp "$img" before
    out=$("$IMGWRITE" "$img" "$off" 0x77 4096 2>&1) || rc=$?
    [[ $rc != 0 ]] || fail "$what: a write at $off went through"
    grep -q "lies over the header, the descriptor, a grain directory or a grain table" <<<"$out" ||
        fail "$what: the refusal does not name the overlap: $out"
    # cmp -l counts bytes from 1; the embedded descriptor is sectors 1-20
    changed=$(cmp -l before "$img" | awk '$1 <= 512 || $1 > 21 * 512' | head -3) || true
    [[ -z $changed ]] || fail "$what: the file changed outside the descriptor: $changed"
    echo "   $what, write at $off: $(sed 's/.*lies over/lies over/' <<<"$out" | head -1)"
}

echo "== an extent with few tables: the overlap is found at open"
for to in 0x1a table; do
    qemu-img create -q -f vmdk small.vmdk 4M
    qemu-io -f vmdk -c "write -P 0x33 0 4M" small.vmdk > /dev/null
    point small.vmdk 0 "$to"
    expect_refused small.vmdk "grain 0 -> $to" $((2 * MiB))
    "$IMGFS" info small.vmdk 2>&1 >/dev/null | grep -q "small.vmdk: grain 0 (at byte [0-9]*) lies over" ||
        fail "grain 0 -> $to: opening the image does not report the overlap"
done

echo "== a larger extent: the overlap is found by the write that would land there"
qemu-img create -q -f vmdk big.vmdk 40G
point big.vmdk 1 table
cp big.vmdk before
rc=0; out=$("$IMGWRITE" big.vmdk $((2 * MiB)) 0x44 4096 2>&1) || rc=$?
[[ $rc == 0 ]] || fail "a write clear of the damage failed: $out"
[[ $("$IMGCAT" big.vmdk $((2 * MiB)) 4096 | od -An -tx1 | tr -d ' \n' | head -c 4) == 4444 ]] || fail "the write clear of the damage did not land"
expect_refused big.vmdk "grain 1 -> its table" 65536
qemu-img check -q big.vmdk || fail "qemu-img check after the refused write"

echo "== a grow shows zeros past the old end, whatever the tables still hold"
qemu-img create -q -f vmdk grow.vmdk 4M
qemu-io -f vmdk -c "write -P 0x33 0 4M" grow.vmdk > /dev/null
capacity grow.vmdk $(((2 * MiB + 4096) / 512))
"$IMGFS" resize grow.vmdk 4M || fail "resize"
qemu-img check -q grow.vmdk || fail "qemu-img check after the grow"
python3 -c 'import sys; sys.stdout.buffer.write(b"\x33" * (2 * 2**20 + 4096) + bytes(2 * 2**20 - 4096))' > want.raw
qemu-img compare -q -f raw want.raw grow.vmdk || fail "after the grow qemu reads other bytes than the old ones and zeros"
"$IMGCAT" grow.vmdk | cmp -s - want.raw || fail "after the grow imgfs reads other bytes than the old ones and zeros"
echo "   capacity patched to 2 MiB + 4 KiB, grown to 4 MiB: zeros past the old end for both"
echo "PASS: vmdk_overlap"
