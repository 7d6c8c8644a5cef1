#!/usr/bin/env bash
# Compressed clusters at every cluster size qemu allows for them, zlib and
# zstd: the descriptor's split of host offset and sector count depends on
# the cluster size, so each size is read (imgcat == qemu-img convert),
# checked (imgfs check counts the compressed clusters as qemu-img does) and
# written into (imgwrite turns the touched clusters into normal ones and
# frees the compressed ones: qemu-img check clean, no leaks, compare equal).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=interop_lib.sh
source "$HERE/interop_lib.sh"
need_cmd qemu-img python3 cmp
need_tool "$IMGCAT" "$IMGWRITE" "$IMGFS"
tmpdir

# 8 MiB: text-like bytes (compress well), random bytes (stored as they are,
# since compressing them saves nothing), and holes, in 192 KiB stripes.
python3 - "$T/src.raw" <<'EOF'
import os, random, sys
r = random.Random(7)
table = bytes(b"etaoin shrdlu"[i % 13] for i in range(256))
with open(sys.argv[1], "wb") as f:
    for i in range(8 * 1024 * 1024 // (192 * 1024)):
        kind = i % 4
        if kind == 3:
            f.write(bytes(192 * 1024))
        elif kind == 2:
            f.write(r.randbytes(192 * 1024))
        else:
            f.write(r.randbytes(192 * 1024).translate(table))
    f.truncate(8 * 1024 * 1024)
EOF

counts() { # FILE TOOL: "compressed allocated" from TOOL check --output=json
    "$2" check --output=json "$1" 2>/dev/null | python3 -c '
import json, sys
j = json.load(sys.stdin)
print(j.get("compressed-clusters", 0), j.get("allocated-clusters", 0))'
}

for type in zlib zstd; do
    for cs in 512 4096 65536 2097152; do
        img=$T/c-$type-$cs.qcow2 exp=$T/c-$type-$cs.raw label="$type cluster_size=$cs"
        echo "== $label"
        qemu-img convert -q -c -f raw -O qcow2 -o "compression_type=$type,cluster_size=$cs" "$T/src.raw" "$img"
        qemu_raw "$img" qcow2 "$exp"
        check_cat "$img" "$exp" "$label"
        q=$(counts "$img" qemu-img) i=$(counts "$img" "$IMGFS")
        [[ $q == "$i" ]] || fail "$label: imgfs check counts '$i' (compressed allocated), qemu-img '$q'"
        [[ ${q%% *} -gt 0 ]] || fail "$label: test setup: qemu-img made no compressed cluster"
        echo "   compressed/allocated clusters: $i, as qemu-img counts them"
        # into the middle of a compressed cluster, across the edge of two,
        # and a run of whole clusters
        run=$((4 * cs)); [[ $run -le $((3 * MiB)) ]] || run=$((3 * MiB))
        for wr in "$((cs / 2 + 3)) 0x5a 10" "$((3 * cs - 7)) 0x5b 14" "$((192 * 1024 * 4)) 0x5c $run"; do
            # shellcheck disable=SC2086
            set -- $wr
            "$IMGWRITE" "$img" "$1" "$2" "$3" || fail "$label: imgwrite $wr"
            pattern_into "$exp" "$1" "$2" "$3"
        done
        qcheck "$img" "$label after writes"
        qcompare "$exp" "$img" "$label after writes"
        check_cat "$img" "$exp" "$label after writes"
        rm -f "$img" "$exp"
    done
done
echo "PASS: compressed"
