#!/usr/bin/env bash
# `imgfs map` against `qemu-img map` on the same images: JSON byte for
# byte, the human table line by line (the program's name aside), exit
# codes equal; whole disks and windows (--start-offset, --max-length), for
# raw, qcow2 (v2, v3, zero clusters that keep their cluster, compressed,
# extended L2, preallocated, external data files, chains with a shorter
# backing file) and vmdk (sparse, flat, split, stream, a chain).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io
need_tool "$IMGFS"
tmpdir
cd "$T"
M=$((1024 * 1024))
io() { qemu-io -f "$1" "${@:3}" "$2" >/dev/null; }

qemu-img create -q -f raw r.raw 4M && io raw r.raw -c "write -P 1 1M 4k" -c "write -P 2 3M 512"
qemu-img create -q -f qcow2 -o compat=0.10 v2.qcow2 4M && io qcow2 v2.qcow2 -c "write -P 1 64k 100k"
qemu-img create -q -f qcow2 base.qcow2 8M
io qcow2 base.qcow2 -c "write -P 1 0 1M" -c "write -z 2M 1M" -c "write -P 2 4M 64k" -c "write -P 3 7M 1M"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 mid.qcow2 && io qcow2 mid.qcow2 -c "write -P 4 $((7 * M)) 64k"
qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 top.qcow2
io qcow2 top.qcow2 -c "write -P 5 512k 1M" -c "write -z 4M 32k" -c "discard 7M 64k"
qemu-img create -q -f qcow2 za.qcow2 1M && io qcow2 za.qcow2 -c "write -P 1 0 128k" -c "write -z 0 64k"
qemu-img create -q -f qcow2 -o preallocation=metadata pm.qcow2 1M
qemu-img create -q -f qcow2 -o extended_l2=on,cluster_size=128k el2.qcow2 2M
io qcow2 el2.qcow2 -c "write -P 1 4k 8k" -c "write -z 64k 4k" -c "write -P 2 1M 130k"
qemu-img convert -c -O qcow2 base.qcow2 comp.qcow2
qemu-img create -q -f qcow2 -o data_file=df.img,data_file_raw=on dfr.qcow2 2M && io qcow2 dfr.qcow2 -c "write -P 1 0 64k" -c "write -P 2 1M 4k"
qemu-img create -q -f qcow2 -o data_file=dn.img dn.qcow2 2M && io qcow2 dn.qcow2 -c "write -P 1 1M 64k" -c "write -P 2 0 4k"
qemu-img create -q -f qcow2 small.qcow2 1M && io qcow2 small.qcow2 -c "write -P 1 0 1M"
qemu-img create -q -f qcow2 -b small.qcow2 -F qcow2 big.qcow2 4M
qemu-img create -q -f qcow2 -b big.qcow2 -F qcow2 big2.qcow2 && io qcow2 big2.qcow2 -c "write -P 1 3M 4k"
qemu-img create -q -f vmdk s.vmdk 4M && io vmdk s.vmdk -c "write -P 1 1M 4k" -c "write -P 2 2M 64k"
qemu-img create -q -f vmdk -o subformat=monolithicFlat f.vmdk 4M && io vmdk f.vmdk -c "write -P 1 1M 4k"
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse ts.vmdk 2100M && io vmdk ts.vmdk -c "write -P 1 $((2048 * M - 4096)) 8k"
qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentFlat tf.vmdk 2100M && io vmdk tf.vmdk -c "write -P 1 $((2048 * M - 4096)) 8k"
qemu-img convert -O vmdk -o subformat=streamOptimized s.vmdk st.vmdk
qemu-img create -q -f vmdk -b s.vmdk -F vmdk sc.vmdk && io vmdk sc.vmdk -c "write -P 3 1M 64k" -c "write -P 3 3M 4k"

same() { same_as_qemu map "$@"; }
for f in r.raw v2.qcow2 base.qcow2 mid.qcow2 top.qcow2 za.qcow2 pm.qcow2 el2.qcow2 comp.qcow2 dfr.qcow2 dn.qcow2 \
    big2.qcow2 s.vmdk f.vmdk ts.vmdk tf.vmdk st.vmdk sc.vmdk; do
    for o in json human; do
        same --output=$o "$f"
        same --output=$o --start-offset=100000 --max-length=3000000 "$f"
    done
done
same --output=json -f qcow2 top.qcow2
same --output=json "$T/top.qcow2"     # file names as given, with their directory
same "$T/top.qcow2"
same --output=json --start-offset=100M top.qcow2  # past the end: one empty run
same --output=json --start-offset=1M --max-length=0 top.qcow2
echo "   $SAME_CASES cases: same output and exit code as qemu-img map"
refused() {  # refused WANT ARGS...: both fail with the same code; imgfs says WANT in one line
    local want=$1 qrc=0 irc=0 out
    shift
    qemu-img map "$@" >/dev/null 2>&1 || qrc=$?
    out=$("$IMGFS" map "$@" 2>&1) || irc=$?
    [[ $irc == "$qrc" && $qrc != 0 ]] || fail "imgfs map $*: exit $irc, qemu-img's $qrc"
    [[ $out == *"$want"* && $(wc -l <<<"$out") == 1 ]] || fail "imgfs map $*: $out"
}
refused "Invalid start offset specified" --start-offset=abc top.qcow2
refused "Invalid max length specified" --max-length=-1 top.qcow2
refused "nonexistent.qcow2" nonexistent.qcow2
echo "   bad offsets and a missing file: one line naming the cause, qemu-img's exit code"
q=$(qemu-img map --image-opts driver=qcow2,file.filename=top.qcow2)
[[ $("$IMGFS" map --image-opts driver=qcow2,file.filename=top.qcow2) == "$q" ]] || fail "map --image-opts differs"
out=$("$IMGFS" map --object throttle-group,id=t0,x-iops-total=10 top.qcow2 2>&1) && fail "--object throttle-group accepted"
[[ $out == *"secret objects only"* ]] || fail "--object throttle-group refused without saying why: $out"
[[ $("$IMGFS" map --object secret,id=s0,data=x top.qcow2) == "$(qemu-img map --object secret,id=s0,data=x top.qcow2)" ]] ||
    fail "map with an unused secret differs"
echo "   --image-opts read; secrets taken, other objects refused with the reason"
echo "PASS: map"
