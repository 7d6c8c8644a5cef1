#!/usr/bin/env bash
# `imgfs create -f qcow2 -o extended_l2=on|off,data_file=NAME,data_file_raw=on|off`
# against qemu-img create with the same options (with preallocation and a
# backing file where qemu-img takes them): the same file sizes (the qcow2
# file and the data file), the same qemu-img info and map, clean under
# qemu-img check; qemu-io then writes into both alike. Refusals as
# qemu-img's, leaving no file.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir
cd "$T"

qcreate -f qcow2 base.qcow2 20M
qio base.qcow2 qcow2 "write -P 9 0 20M"
specific() {
    qemu-img info --output=json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
f = d["format-specific"]["data"]
f.pop("data-file", None)  # names differ (q.data, i.data): compared apart
print(f, d.get("backing-filename"), d["virtual-size"])'
}
mapof() {
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
for e in json.load(sys.stdin): print(e["start"], e["length"], e["depth"], e["zero"], e["data"], e.get("offset") if "'"$2"'" else "")'
}
CASES=0
create_case() {  # OPTS SIZE [BACKING]
    local opts=$1 size=$2 back=() qo io
    [[ -n ${3:-} ]] && back=(-b "$3" -F qcow2)
    rm -f i.qcow2 q.qcow2 i.data q.data
    qo=${opts//@/q.data} io=${opts//@/i.data}
    qemu-img create -q -f qcow2 -o "$qo" "${back[@]}" q.qcow2 "$size"
    "$IMGFS" create -q -f qcow2 -o "$io" "${back[@]}" i.qcow2 "$size" || fail "create -o $io failed"
    qcheck i.qcow2 "create -o $io ${back[*]}"
    [[ $(stat -c %s i.qcow2) == "$(stat -c %s q.qcow2)" ]] ||
        fail "-o $io: file size $(stat -c %s i.qcow2), qemu-img's $(stat -c %s q.qcow2)"
    [[ $(specific i.qcow2) == "$(specific q.qcow2)" ]] || fail "-o $io: $(specific i.qcow2), qemu-img: $(specific q.qcow2)"
    local with_offsets=""
    if [[ $opts == *data_file* ]]; then
        with_offsets=yes  # data lives at its guest offset in the data file: offsets agree
        [[ -f i.data && $(stat -c %s i.data) == "$(stat -c %s q.data)" ]] ||
            fail "-o $io: data file size $(stat -c %s i.data 2>/dev/null), qemu-img's $(stat -c %s q.data)"
        [[ $(qemu-img info --output=json i.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["data-file"])') == i.data ]] ||
            fail "-o $io: the data file is not named i.data"
    fi
    diff <(mapof q.qcow2 "$with_offsets") <(mapof i.qcow2 "$with_offsets") || fail "-o $io ${back[*]}: map differs from qemu-img's"
    qio q.qcow2 qcow2 "write -P 1 1000 200k" "write -P 2 $((3 << 20)) 64k" "write -z 5M 64k"
    qio i.qcow2 qcow2 "write -P 1 1000 200k" "write -P 2 $((3 << 20)) 64k" "write -z 5M 64k"
    qcheck i.qcow2 "writes after create -o $io"
    qemu-img compare -q q.qcow2 i.qcow2 || fail "-o $io: reads other than qemu's after the same writes"
    CASES=$((CASES + 1))
}
for p in off metadata falloc full; do
    create_case "extended_l2=on,preallocation=$p" 20M
    create_case "extended_l2=on,cluster_size=16k,preallocation=$p" 20M
    create_case "extended_l2=on,cluster_size=2M,preallocation=$p" 20M
    create_case "data_file=@,preallocation=$p" 20M
    create_case "data_file=@,data_file_raw=on,preallocation=$p" 20M
    create_case "data_file=@,extended_l2=on,preallocation=$p,cluster_size=32k" 20M
done
create_case "extended_l2=on,preallocation=metadata" 20M base.qcow2   # what only extended L2 allows
create_case "extended_l2=on" 20M base.qcow2
create_case "data_file=@" 20M base.qcow2
create_case "extended_l2=on,preallocation=metadata" 1100M
echo "   $CASES layouts as qemu-img makes them"

for opts in "extended_l2=on,cluster_size=4k" "extended_l2=on,compat=0.10" "data_file_raw=on" \
    "data_file=x.data,compat=0.10" "data_file=x.data,data_file_raw=on -b base.qcow2 -F qcow2" \
    "extended_l2=maybe" "preallocation=metadata -b base.qcow2 -F qcow2"; do
    # shellcheck disable=SC2086  # the words are options
    NO_FILE=out.qcow2 errs_as_qemu create -f qcow2 -o $opts out.qcow2 20M
    [[ ! -e x.data ]] || fail "create -o $opts left x.data"
done
echo "PASS: create -o extended_l2, data_file, data_file_raw"
