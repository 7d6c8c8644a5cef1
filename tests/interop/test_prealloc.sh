#!/usr/bin/env bash
# Preallocated qcow2 images (metadata, falloc, full; compat 0.10 and 1.1),
# including zero clusters that keep their host offset: read exactly like
# qemu-img convert, written through imagecore they stay clean and equal to
# the model.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGWRITE" "$IMGCAT"
tmpdir

for pa in metadata falloc full; do
    for compat in 0.10 1.1; do
        img=$T/p-$pa-$compat.qcow2
        qemu-img create -q -f qcow2 -o "preallocation=$pa,compat=$compat" "$img" 16M
        qio "$img" qcow2 "write -P 0x11 1M 100k" "write -P 0x12 5M 64k"
        # On 1.1 this makes zero clusters that keep their (preallocated) offset.
        [[ $compat == 1.1 ]] && qio "$img" qcow2 "write -z 3M 128k" "write -z 5M 64k"
        qemu-img convert -U -O raw "$img" "$T/exp.raw"
        cmp "$T/exp.raw" <("$IMGCAT" "$img") || fail "$pa/$compat: read differs from qemu-img convert"
        for w in "12345 0xab 100000" "3000000 0xcd 200000" "5300000 0x0e 1" "16000000 0x01 777216"; do
            # shellcheck disable=SC2086
            set -- $w
            "$IMGWRITE" "$img" "$1" "$2" "$3" || fail "$pa/$compat: imgwrite failed"
            python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.seek($1); f.write(bytes([$2])*$3)" "$T/exp.raw"
        done
        qcheck "$img" "$pa/$compat"
        qemu-img compare -q -f raw -F qcow2 "$T/exp.raw" "$img" || fail "$pa/$compat: image differs from the model"
        echo "   preallocation=$pa compat=$compat: read exact, writes clean"
    done
done
echo "PASS: prealloc"
