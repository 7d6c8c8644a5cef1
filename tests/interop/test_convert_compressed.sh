#!/usr/bin/env bash
# `imgfs convert -c` against qemu-img convert -c on the same sources: the
# output reads as the source, passes qemu-img check, and holds as many
# compressed, plain and unallocated clusters as qemu-img's (zero clusters
# skipped, clusters that do not shrink written plain). zlib and zstd, cluster
# sizes 4k/64k/2M, source runs that do not line up with the target's
# clusters, a disk whose last cluster is partial, several workers in and out
# of order, narrow refcounts, -n onto clusters already held, writes by qemu
# into the compressed image afterwards, errors as qemu-img's.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir
cd "$T"

# A raw source: text-like runs (compressible), random runs (not), zeros
# written as data, holes, and a last cluster that is partial.
python3 - src.raw <<'PY'
import random, sys
rnd = random.Random(5)
size = 12 * 1048576 + 4608
words = [bytes(rnd.choice(b"abcdefgh ijklm") for _ in range(48)) for _ in range(32)]
with open(sys.argv[1], "wb") as f:
    f.truncate(size)
    pos = 0
    while pos < size:
        run = min(rnd.choice([4096, 20480, 65536, 300000, 1048576]), size - pos)
        kind = rnd.random()
        f.seek(pos)
        if kind < 0.35:
            f.write(b"".join(rnd.choice(words) for _ in range(run // 48 + 1))[:run])
        elif kind < 0.55:
            f.write(rnd.randbytes(run))
        elif kind < 0.65:
            f.write(bytes(run))
        pos += run
    f.seek(size - 100)
    f.write(b"the end" * 10)
PY
# A qcow2 source with 4 KiB clusters, partly allocated: its runs end inside
# the target's 64 KiB clusters.
qemu-img create -q -f qcow2 -o cluster_size=4k small.qcow2 8M
qio small.qcow2 qcow2 "write -P 0x61 4k 8k" "write -P 0x62 70k 4k" "write -P 0 200k 64k" "write -P 0x63 1M 1M" "write -z 1536k 64k" "write -P 0x64 8188k 4k"

count() {  # count IMG: compressed / allocated clusters and check's verdict
    qemu-img check --output=json "$1" | python3 -c '
import json, sys
j = json.load(sys.stdin)
bad = j.get("corruptions", 0) + j.get("leaks", 0) + j.get("check-errors", 0)
print(j.get("compressed-clusters", 0), j.get("allocated-clusters", 0), "clean" if bad == 0 else "NOT CLEAN")'
}
CASES=0
compressed_case() {  # compressed_case SRC OPTS [IMGFS-ONLY-ARGS...]
    local src=$1 opts=$2 q i
    shift 2
    rm -f q.qcow2 i.qcow2
    qemu-img convert -c -O qcow2 -o "$opts" "$src" q.qcow2
    "$IMGFS" convert "$@" -c -O qcow2 -o "$opts" "$src" i.qcow2 || fail "convert -c -o $opts $src $* failed"
    qemu-img compare -q "$src" i.qcow2 || fail "convert -c -o $opts $src $*: the output does not read as the source"
    q=$(count q.qcow2) i=$(count i.qcow2)
    [[ $i == *" clean" ]] || fail "convert -c -o $opts $src $*: qemu-img check: $i"
    [[ $i == "$q" ]] || fail "convert -c -o $opts $src $*: compressed/allocated clusters $i, qemu-img's $q"
    [[ ${i%% *} -gt 0 ]] || fail "convert -c -o $opts $src $*: no compressed cluster at all"
    CASES=$((CASES + 1))
}
for src in src.raw small.qcow2; do
    for ct in zlib zstd; do
        for cs in 4k 64k 2M; do
            compressed_case "$src" "compression_type=$ct,cluster_size=$cs"
        done
        compressed_case "$src" "compression_type=$ct" -m 1
        compressed_case "$src" "compression_type=$ct" -m 8 -W
    done
done
# narrow refcounts: every compressed cluster in host clusters of its own
compressed_case src.raw "refcount_bits=1"
compressed_case src.raw "refcount_bits=4,compression_type=zstd"

# imgfs reads back what it wrote, as qemu does
qemu-img convert -c -O qcow2 -o compression_type=zstd src.raw i.qcow2 && rm i.qcow2
"$IMGFS" convert -c -O qcow2 -o compression_type=zstd src.raw i.qcow2
"$IMGFS" convert -O raw i.qcow2 back.raw
cmp -s src.raw back.raw || fail "imgfs does not read back its own compressed clusters"
# The compression type is in the header as qemu-img info reports it.
qemu-img info i.qcow2 | grep -q "compression type: zstd" || fail "zstd output: qemu-img info does not say zstd"

# qemu writes into the compressed image: its refcounts hold (no leak, no
# corruption after qemu frees compressed clusters by copy-on-write).
qio i.qcow2 qcow2 "write -P 0x55 0 64k" "write -P 0x56 100k 8k" "write -z 3M 1M"
[[ $(count i.qcow2) == *" clean" ]] || fail "after qemu's writes into the compressed image: $(count i.qcow2)"

# -n onto a target that holds clusters already: those are written plain.
qemu-img create -q -f qcow2 n.qcow2 "$(stat -c %s src.raw)"
qio n.qcow2 qcow2 "write -P 0x11 0 2M"
"$IMGFS" convert -n -c -O qcow2 src.raw n.qcow2 || fail "convert -n -c failed"
qemu-img compare -q src.raw n.qcow2 || fail "convert -n -c: the target does not read as the source"
[[ $(count n.qcow2) == *" clean" ]] || fail "convert -n -c: $(count n.qcow2)"

# -c with -B: only what differs from the new backing file is written,
# compressed; zeros over data become zero clusters. The source is an overlay
# whose every top-layer cluster differs from its base, so qemu-img (which
# copies the top layer) writes the same clusters.
qemu-img create -q -f qcow2 base.qcow2 8M
qio base.qcow2 qcow2 "write -P 0x21 0 8M"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 top.qcow2
qio top.qcow2 qcow2 "write -P 0x22 1M 192k" "write -P 0x23 5000 100" "write -z 4M 128k" "write -P 0x24 8323072 65536"
for z in zlib zstd; do
    rm -f qb.qcow2 ib.qcow2
    qemu-img convert -c -O qcow2 -o compression_type=$z -B base.qcow2 -F qcow2 top.qcow2 qb.qcow2
    "$IMGFS" convert -c -O qcow2 -o compression_type=$z -B base.qcow2 -F qcow2 top.qcow2 ib.qcow2 || fail "convert -c -B ($z)"
    qemu-img compare -q top.qcow2 ib.qcow2 || fail "convert -c -B ($z): does not read as the source"
    [[ $(count ib.qcow2) == "$(count qb.qcow2)" ]] || fail "convert -c -B ($z): $(count ib.qcow2), qemu-img's $(count qb.qcow2)"
    [[ $(qemu-img info --output=json ib.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])') == base.qcow2 ]] ||
        fail "convert -c -B ($z): not backed by base.qcow2"
    CASES=$((CASES + 1))
done
# onto an existing overlay (-n): the clusters that differ land compressed
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 nb.qcow2
"$IMGFS" convert -n -c -O qcow2 top.qcow2 nb.qcow2 || fail "convert -n -c onto an overlay"
qemu-img compare -q top.qcow2 nb.qcow2 || fail "convert -n -c onto an overlay: other content"
[[ $(count nb.qcow2) == "$(count qb.qcow2)" ]] || fail "convert -n -c onto an overlay: $(count nb.qcow2), -B gives $(count qb.qcow2)"
echo "   -c -B and -c onto an overlay: $(count ib.qcow2)"

# errors: one line, exit code as qemu-img's, no output left
err() { NO_FILE=e.out errs_as_qemu convert "$@"; }
err -c -O raw src.raw e.out
err -c -O qcow2 -o compat=0.10,compression_type=zstd src.raw e.out
err -c -O qcow2 -o compression_type=lz4 src.raw e.out
echo "convert -c: $CASES cases agree with qemu-img"
