#!/usr/bin/env bash
# qcow2 with extended L2 entries (extended_l2=on, 32 subclusters per
# cluster): allocated, zero and unallocated subclusters read exactly like
# qemu-img convert and map like qemu-img map, alone and as overlays, with
# compressed clusters too; imgfs check agrees with qemu-img check. Writes
# (sub-subcluster, into zero and unallocated subclusters, over compressed
# clusters, on overlays) leave images qemu-img check calls clean and
# compare equal to the model, and allocate the same subclusters qemu does.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGCAT" "$IMGMAP" "$IMGWRITE" "$IMGFS"
tmpdir

for cs in 16k 64k 2M; do
    base=$T/base-$cs.qcow2 top=$T/top-$cs.qcow2
    qemu-img create -q -f qcow2 -o "extended_l2=on,cluster_size=$cs" "$base" 16M
    qio "$base" qcow2 "write -P 0x11 0 6M" "write -P 0x12 10M 100k"
    qemu-img create -q -f qcow2 -o "extended_l2=on,cluster_size=$cs" -b "$(basename "$base")" -F qcow2 "$top"
    # sub-subcluster writes (copy-on-write of one subcluster), zero and
    # discarded subclusters, writes across cluster boundaries
    qio "$top" qcow2 "write -P 0x21 5000 3000" "write -P 0x22 70000 100" "write -z 200k 4k" \
        "write -P 0x23 1000000 300000" "write -z 3M 1M" "discard 5M 64k" "write -P 0x24 12M 5"
    for img in "$base" "$top"; do
        label="extended_l2 cluster_size=$cs $(basename "$img")"
        qemu_raw "$img" qcow2 "$T/exp.raw"
        check_cat "$img" "$T/exp.raw" "$label"
        check_cat_ranges "$img" "$T/exp.raw" "$label" "4999 3002" "69632 4096" "204000 8000" "3145000 1050000"
        check_map "$img" qcow2 "$label"
        a=$("$IMGFS" check "$img" 2>&1; echo "exit $?")
        b=$(qemu-img check "$img" 2>&1; echo "exit $?")
        [[ $a == "$b" ]] || fail "$label: imgfs check differs from qemu-img check: $a // $b"
    done
    qemu_raw "$top" qcow2 "$T/model.raw"
    for w in "1 0x31 1" "4000 0x32 9000" "204000 0x33 6000" "3145700 0x34 1048700" "5100000 0x35 70000" \
             "16776000 0x36 1216"; do
        # shellcheck disable=SC2086
        set -- $w
        "$IMGWRITE" "$top" "$1" "$2" "$3" || fail "imgwrite $top $w"
        python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.seek($1); f.write(bytes([$2])*$3)" "$T/model.raw"
    done
    qcheck "$top" "extended_l2 cluster_size=$cs after writes"
    qemu-img compare -q -f raw -F qcow2 "$T/model.raw" "$top" || fail "extended_l2 cluster_size=$cs: image differs from the model"
    check_cat "$top" "$T/model.raw" "extended_l2 cluster_size=$cs after writes"
    echo "   extended_l2 cluster_size=$cs: reads, maps, checks and writes agree with qemu"
done

# Subcluster allocation: the same writes on two copies of a fresh overlay,
# one by qemu-io and one by imgfs, must map alike (which ranges the overlay
# holds and which still come from the backing file), not only read alike.
map_shape() {
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
runs = []
for e in json.load(sys.stdin):
    k = (e["depth"], e["zero"], e["data"])
    if runs and runs[-1][2] == k:
        runs[-1][1] += e["length"]
    else:
        runs.append([e["start"], e["length"], k])
for r in runs:
    print(*r)'
}
for cs in 64k 1M; do
    qemu-img create -q -f qcow2 -o "extended_l2=on,cluster_size=$cs" "$T/sb.qcow2" 8M
    qio "$T/sb.qcow2" qcow2 "write -P 0x11 0 8M"
    qemu-img create -q -f qcow2 -o "extended_l2=on,cluster_size=$cs" -b sb.qcow2 -F qcow2 "$T/sq.qcow2"
    cp "$T/sq.qcow2" "$T/si.qcow2"
    for w in "5000 3000" "70000 100" "131072 65536" "200000 140000" "1048000 4096" "3000000 2000000" "8384000 4608"; do
        # shellcheck disable=SC2086
        set -- $w
        qio "$T/sq.qcow2" qcow2 "write -P 0x33 $1 $2"
        "$IMGWRITE" "$T/si.qcow2" "$1" 0x33 "$2" || fail "imgwrite si.qcow2 $w"
    done
    if ! diff <(map_shape "$T/sq.qcow2") <(map_shape "$T/si.qcow2") >"$T/mapdiff"; then
        cat "$T/mapdiff"
        fail "extended_l2 cluster_size=$cs: imgfs allocates other subclusters than qemu for the same writes"
    fi
    qcheck "$T/si.qcow2" "extended_l2 cluster_size=$cs subcluster writes"
    qemu-img compare -q "$T/sq.qcow2" "$T/si.qcow2" || fail "extended_l2 cluster_size=$cs: subcluster writes differ from qemu's"
    echo "   extended_l2 cluster_size=$cs: small writes allocate the same subclusters as qemu"
done

python3 -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 16384)" > "$T/pat.raw"
qemu-img convert -c -O qcow2 -o extended_l2=on "$T/pat.raw" "$T/comp.qcow2"
check_cat "$T/comp.qcow2" "$T/pat.raw" "extended_l2 with compressed clusters"
"$IMGWRITE" "$T/comp.qcow2" 70000 0x77 5000 || fail "write into a compressed cluster (extended_l2)"
python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.seek(70000); f.write(bytes([0x77])*5000)" "$T/pat.raw"
qcheck "$T/comp.qcow2" "extended_l2 compressed after a write"
qemu-img compare -q -f raw -F qcow2 "$T/pat.raw" "$T/comp.qcow2" || fail "extended_l2 compressed: differs after a write"
echo "PASS: extended_l2"
