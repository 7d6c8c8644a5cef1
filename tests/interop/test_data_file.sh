#!/usr/bin/env bash
# qcow2 with an external data file (data_file=, with and without
# data_file_raw): reads exactly like qemu-img convert, maps like qemu-img
# map, and writes land at their guest offsets in the data file, leaving an
# image qemu-img check calls clean, equal to the model, and (with
# data_file_raw) a data file that is itself the raw disk.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGCAT" "$IMGMAP" "$IMGWRITE" "$IMGFS"
tmpdir

for raw in off on; do
    mkdir -p "$T/$raw/sub"
    # qemu-img 7.2 resolves a relative data file name against its working
    # directory, imgfs against the image's (as for backing files): work in
    # the image's directory so that both find it.
    cd "$T/$raw"
    img=d.qcow2
    qemu-img create -q -f qcow2 -o "data_file=sub/d.data,data_file_raw=$raw" d.qcow2 8M
    qio "$img" qcow2 "write -P 0x11 0 64k" "write -P 0x12 100000 200000" "write -z 1M 64k" "write -P 0x13 7M 1M"
    label="data_file_raw=$raw"
    qemu_raw "$img" qcow2 "$T/exp.raw"
    check_cat "$img" "$T/exp.raw" "$label"
    check_map "$img" qcow2 "$label"
    "$IMGFS" info "$img" | grep -q "data file: sub/d.data" || fail "$label: imgfs info does not name the data file"
    for w in "0 0x21 1" "5000 0x22 70000" "1048000 0x23 70000" "4000000 0x24 300000" "8388000 0x25 608"; do
        # shellcheck disable=SC2086
        set -- $w
        "$IMGWRITE" "$img" "$1" "$2" "$3" || fail "$label: imgwrite $w"
        python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.seek($1); f.write(bytes([$2])*$3)" "$T/exp.raw"
    done
    qcheck "$img" "$label after writes"
    qemu-img compare -q -f raw -F qcow2 "$T/exp.raw" "$img" || fail "$label: image differs from the model"
    if [[ $raw == on ]]; then
        qemu-img info "$img" | grep -q "data file raw: true" || fail "$label: the raw bit was cleared by writing"
        head -c "$(stat -c %s "$T/exp.raw")" "$T/$raw/sub/d.data" | cmp - "$T/exp.raw" || fail "$label: the data file is not the raw disk"
    fi
    # from another working directory, the relative name still resolves
    # against the image's directory (where qemu-img 7.2 would not find it)
    (cd / && "$IMGCAT" "$T/$raw/$img") | cmp - "$T/exp.raw" ||
        fail "$label: read from another working directory differs (data file resolved against the cwd?)"
    echo "   $label: reads, maps and writes agree with qemu"
done
echo "PASS: data_file"
