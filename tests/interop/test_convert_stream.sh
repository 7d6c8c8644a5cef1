#!/usr/bin/env bash
# imgfs convert to a streamOptimized vmdk (-O vmdk -o subformat=streamOptimized,
# as OVF exports are made): every grain deflated and appended with its
# marker, the end-of-stream marker last. qemu-img check finds it clean,
# qemu-img compare finds the source's content, its grain data ends where
# qemu-img's does (the same grains, deflated alike), and imgfs reads it back.
# `-c -O vmdk` onto other subformats writes plain grains, as qemu-img does.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS" "$IMGCAT"
tmpdir
cd "$T"

# stream_end FILE: the offset of the end-of-stream marker, found by walking
# the markers from the first grain (an independent reader of the layout).
stream_end() {
    python3 - "$1" <<'EOF'
import struct, sys
d = open(sys.argv[1], "rb").read()
assert d[:4] == b"KDMV", "no sparse header"
version, flags = struct.unpack_from("<II", d, 4)
assert version == 3 and flags & 0x30000 == 0x30000, "not a compressed stream with markers"
off = struct.unpack_from("<Q", d, 64)[0] * 512   # overhead: the first grain
while True:
    lba, size = struct.unpack_from("<QI", d, off)
    if size:  # a grain: marker, data, padding
        off += (12 + size + 511) // 512 * 512
        continue
    mtype = struct.unpack_from("<I", d, off + 12)[0]
    if mtype == 0:
        print(off); break
    off += 512 + (lba * 512 if mtype in (1, 2) else 0) + (512 if mtype == 3 else 0)
EOF
}

# The source: data at unaligned offsets, zeros, holes, incompressible grains
# (deflate makes them larger than a grain) and a partial last grain.
src=$T/src.qcow2
qcreate -f qcow2 "$src" $((100 * MiB + 3 * 512))
qio "$src" qcow2 "write -P 0x11 0 3M" "write -P 0x22 $((10 * MiB + 1000)) 5000" "write -z 20M 1M" \
    "write -P 0x33 $((100 * MiB)) 1536"
qemu-img convert -O raw "$src" src.raw
head -c $((2 * MiB)) /dev/urandom | dd of=src.raw bs=1M seek=50 conv=notrunc status=none
qemu-img convert -f raw -O qcow2 src.raw "$src"

qemu-img convert -O vmdk -o subformat=streamOptimized "$src" q.vmdk
for opts in "" "-m 1" "-W -m 16" "-c" "-S 0"; do
    rm -f i.vmdk
    # shellcheck disable=SC2086  # the words are options
    "$IMGFS" convert $opts -O vmdk -o subformat=streamOptimized "$src" i.vmdk || fail "convert $opts to streamOptimized"
    qemu-img check -q i.vmdk || fail "convert $opts: qemu-img check failed: $(qemu-img check i.vmdk 2>&1)"
    qemu-img compare -q -f raw src.raw i.vmdk || fail "convert $opts: qemu reads other content"
    [[ $(qemu-img info --output=json i.vmdk | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["create-type"])') == streamOptimized ]] ||
        fail "convert $opts: not a streamOptimized image"
    [[ $(stream_end i.vmdk) == "$(stream_end q.vmdk)" ]] ||
        fail "convert $opts: the stream ends at $(stream_end i.vmdk), qemu-img's at $(stream_end q.vmdk)"
    "$IMGCAT" i.vmdk | cmp -s - src.raw || fail "convert $opts: imgfs reads other content back"
    echo "   convert $opts: the stream ends at $(stream_end i.vmdk), as qemu-img's"
done
# The stream takes no other writes: it stays read-only when opened again.
out=$("$IMGFS" convert -n -O vmdk "$src" i.vmdk 2>&1) && fail "convert -n into a written stream succeeded"
[[ $(wc -l <<<"$out") == 1 ]] || fail "convert -n into a stream: $out"
qemu-img compare -q -f raw src.raw i.vmdk || fail "a refused convert -n changed the stream"

# -c onto monolithicSparse: qemu-img writes plain grains; so does imgfs.
qemu-img convert -c -O vmdk "$src" qc.vmdk
"$IMGFS" convert -c -O vmdk "$src" ic.vmdk || fail "convert -c -O vmdk"
[[ $(stat -c %s ic.vmdk) == "$(stat -c %s qc.vmdk)" ]] || fail "-c -O vmdk: $(stat -c %s ic.vmdk) bytes, qemu-img's $(stat -c %s qc.vmdk)"
qemu-img compare -q -f raw src.raw ic.vmdk || fail "-c -O vmdk: other content"
echo "PASS: convert to streamOptimized"
