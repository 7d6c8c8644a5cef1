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
# qcow2: refused (not yet), and the size stays
out=$("$IMGFS" resize --preallocation=falloc src.qcow2 16M 2>&1) && fail "qcow2 resize --preallocation succeeded: $out"
[[ $(wc -l <<<"$out") == 1 && $out == *"not supported yet"* ]] || fail "qcow2 resize --preallocation: $out"
[[ $(qemu-img info --output=json src.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') == 8388608 ]] ||
    fail "a refused qcow2 resize --preallocation changed the size"

# errors: one line, exit code as qemu-img's, no image left
err() { NO_FILE=e.img errs_as_qemu create "$@"; }
err -f qcow2 -o preallocation=sometimes e.img 1M
err -f raw -o preallocation=metadata e.img 1M
err -f raw -o preallocation=sometimes e.img 1M
err -f qcow2 -o preallocation=full -b src.qcow2 -F qcow2 e.img
echo "create -o preallocation: $CASES cases agree with qemu-img"
