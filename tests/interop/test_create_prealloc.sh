#!/usr/bin/env bash
# `imgfs create -o preallocation=off|metadata|falloc|full` against qemu-img
# create with the same options: the same file size, the same map (data and
# zero flags, runs split where qemu's are), clean under qemu-img check, and
# host space reserved as qemu reserves it (falloc, full) or not (metadata).
# raw takes off, falloc and full, and so does resize --preallocation.
# measure counts the reserved space as required, as qemu-img measure does.
# Errors as qemu-img's.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img python3
need_tool "$IMGFS"
tmpdir
cd "$T"

mapof() {  # the map without host offsets (layouts may place tables apart)
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
for e in json.load(sys.stdin): print(e["start"], e["length"], e["zero"], e["data"])'
}
kib() { du -k "$1" | cut -f1; }
CASES=0
prealloc_case() {  # prealloc_case FMT OPTS SIZE
    local fmt=$1 opts=$2 size=$3 a b
    rm -f i.img q.img
    qemu-img create -q -f "$fmt" -o "$opts" q.img "$size"
    "$IMGFS" create -q -f "$fmt" -o "$opts" i.img "$size" || fail "create -f $fmt -o $opts $size failed"
    [[ $(stat -c %s i.img) == "$(stat -c %s q.img)" ]] ||
        fail "-f $fmt -o $opts $size: file size $(stat -c %s i.img), qemu-img's $(stat -c %s q.img)"
    if [[ $fmt == qcow2 ]]; then
        qemu-img check -q i.img || fail "-f $fmt -o $opts $size: qemu-img check failed"
    fi
    # (raw: qemu-img writes the first 4 KiB of a new file, so the host's
    # map of it differs there; what is reserved is compared below)
    a=$(mapof i.img) b=$(mapof q.img)
    [[ $fmt == raw || $a == "$b" ]] || fail "-f $fmt -o $opts $size: map differs from qemu-img's:
$(diff <(echo "$b") <(echo "$a") | head)"
    qemu-img compare -q -f "$fmt" -F "$fmt" i.img q.img || fail "-f $fmt -o $opts $size: does not read as qemu's"
    # Reserved space: within 1 MiB of qemu's (metadata clusters may sit apart).
    a=$(kib i.img) b=$(kib q.img)
    (( a <= b + 1024 && b <= a + 1024 )) || fail "-f $fmt -o $opts $size: $a KiB on the host, qemu-img's $b KiB"
    case $opts in *falloc*|*full*)
        (( a * 1024 >= $(stat -c %s q.img) - (1 << 20) )) || fail "-f $fmt -o $opts $size: only $a KiB reserved" ;;
    esac
    CASES=$((CASES + 1))
}
for p in off metadata falloc full; do
    prealloc_case qcow2 "preallocation=$p" 40M
    prealloc_case qcow2 "preallocation=$p,cluster_size=4k" 5M        # several L2 tables
    prealloc_case qcow2 "preallocation=$p,compat=0.10,cluster_size=4k" 3M
    prealloc_case qcow2 "preallocation=$p,refcount_bits=1" 3M
done
prealloc_case qcow2 "preallocation=metadata" 1100M  # several 512 MiB tables, sparse
prealloc_case qcow2 "preallocation=falloc" 1100M
for p in off falloc full; do prealloc_case raw "preallocation=$p" 7M; done

# measure: reserved space is required space
same_as_qemu measure -O qcow2 -o preallocation=metadata --size 1G
same_as_qemu measure -O qcow2 -o preallocation=falloc --size 1G
same_as_qemu measure -O qcow2 -o preallocation=full,cluster_size=4k --size 100M
qemu-img create -q -f qcow2 src.qcow2 8M
same_as_qemu measure -O qcow2 -o preallocation=full src.qcow2

# resize --preallocation (raw): what the disk gains is reserved as qemu's is
for p in falloc full; do
    rm -f i.raw q.raw
    qemu-img create -q -f raw q.raw 1M && qemu-img resize -q -f raw --preallocation=$p q.raw 5M
    "$IMGFS" create -q -f raw i.raw 1M && "$IMGFS" resize -q -f raw --preallocation=$p i.raw 5M ||
        fail "resize --preallocation=$p failed"
    [[ $(stat -c %s i.raw) == 5242880 ]] || fail "resize --preallocation=$p: size $(stat -c %s i.raw)"
    a=$(kib i.raw) b=$(kib q.raw)
    (( a >= 4096 && a <= b + 64 )) || fail "resize --preallocation=$p: $a KiB reserved, qemu-img $b KiB"
done
rerr() { errs_as_qemu resize -f raw "$@"; }
rerr --preallocation=metadata i.raw 9M
rerr --preallocation=full --shrink i.raw 1M
rerr --preallocation=sometimes i.raw 9M
[[ $(stat -c %s i.raw) == 5242880 ]] || fail "a refused resize --preallocation changed the size"
# qcow2: the clusters the disk gains are allocated as qemu-img resize
# allocates them (the same map flags and file size within a few clusters; host
# space reserved for falloc and full, not for metadata); qemu-io then
# writes into them and the image stays clean. Cases: a grow inside the
# last L2 table, one past it (new tables), an unaligned old size, 4 KiB
# clusters, extended L2 entries, a backing file larger than the old size
# (the gained part reads zeros, not the backing file).
qcreate -f qcow2 big.qcow2 64M
qio big.qcow2 qcow2 "write -P 9 0 64M"
# The map's flags, runs of equal flags merged (where clusters lie may
# differ), "zero" left out where data is allocated: there it says only
# whether the host file has a hole (qemu-img writes zeros into the partial
# clusters at either end, imgfs leaves holes that read the same).
flagsof() {
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
out = []
for e in json.load(sys.stdin):
    k = (e["depth"], e["present"], e["zero"] and not e["data"], e["data"])
    if out and out[-1][2] == k and out[-1][0] + out[-1][1] == e["start"]:
        out[-1][1] += e["length"]
    else:
        out.append([e["start"], e["length"], k])
for s, n, k in out: print(s, n, *k)'
}
resize_case() {  # resize_case CREATE_OPTS OLD NEW MODE [BACKING]
    local copts=$1 old=$2 new=$3 mode=$4 back=() a b
    [[ -n ${5:-} ]] && back=(-b "$5" -F qcow2)
    rm -f i.qcow2 q.qcow2
    qemu-img create -q -f qcow2 -o "${copts:-compat=1.1}" "${back[@]}" q.qcow2 "$old"
    qio q.qcow2 qcow2 "write -P 1 0 100k"
    cp q.qcow2 i.qcow2
    qemu-img resize -q --preallocation="$mode" q.qcow2 "$new"
    "$IMGFS" resize -q --preallocation="$mode" i.qcow2 "$new" || fail "resize --preallocation=$mode ($copts $old -> $new) failed"
    qcheck i.qcow2 "resize --preallocation=$mode ($copts $old -> $new)"
    a=$(flagsof i.qcow2) b=$(flagsof q.qcow2)
    [[ $a == "$b" ]] || fail "resize --preallocation=$mode ($copts $old -> $new): map differs from qemu-img's:
$(diff <(echo "$b") <(echo "$a") | head)"
    qemu-img compare -q q.qcow2 i.qcow2 || fail "resize --preallocation=$mode ($copts): reads other than qemu's"
    # (Over a larger backing file the gained part must hide it: qemu-img
    # reserves clusters, then makes them zero clusters, which leaves the
    # reserved space unused in the file; imgfs does not reserve it.)
    if [[ -z ${5:-} ]]; then
        a=$(stat -c %s i.qcow2) b=$(stat -c %s q.qcow2)
        (( a <= b + 4 * 65536 && b <= a + 4 * 65536 )) || fail "resize --preallocation=$mode ($copts): file $a bytes, qemu-img's $b"
        a=$(kib i.qcow2) b=$(kib q.qcow2)
        (( a <= b + 1024 && b <= a + 1024 )) || fail "resize --preallocation=$mode ($copts): $a KiB on the host, qemu-img's $b KiB"
    fi
    a=$(qemu-img info --output=json i.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])')
    qio i.qcow2 qcow2 "write -P 2 $((a - 4096)) 4k" "write -P 3 $((a / 2)) 8k"
    qcheck i.qcow2 "a write after resize --preallocation=$mode ($copts)"
    CASES=$((CASES + 1))
}
for p in metadata falloc full; do
    resize_case "" 10M 20M $p
    resize_case "" 10M 1100M $p
    resize_case "" 10000384 20000256 $p
    resize_case "cluster_size=4k" 3M 9M $p
    resize_case "extended_l2=on" 10M 30M $p
    resize_case "" 16M 64M $p big.qcow2
    resize_case "extended_l2=on" 16M 64M $p big.qcow2
done
# errors: one line, exit code as qemu-img's, no image left
err() { NO_FILE=e.img errs_as_qemu create "$@"; }
err -f qcow2 -o preallocation=sometimes e.img 1M
err -f raw -o preallocation=metadata e.img 1M
err -f raw -o preallocation=sometimes e.img 1M
err -f qcow2 -o preallocation=full -b src.qcow2 -F qcow2 e.img
echo "create -o preallocation: $CASES cases agree with qemu-img"
