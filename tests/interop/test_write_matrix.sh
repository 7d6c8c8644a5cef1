#!/usr/bin/env bash
# Write path against qemu: images made and filled by qemu, then written through
# imagecore (imgwrite). The expected guest content is the qemu-img convert
# output of the image before the writes, with the same writes applied by dd.
# After the writes: `qemu-img check` clean (no errors, no leaks), the header
# neither dirty nor corrupt, `qemu-img compare` identical to the model, imgcat
# identical to the model, and backing files untouched.
#  - every cluster size 512 / 4K / 64K / 2M with compat 0.10 and 1.1: writes
#    that are unaligned, span clusters, go into holes, allocated clusters,
#    zero clusters (allocated and unmapped), discarded clusters, first/last byte
#  - overlays: partial-cluster writes whose copy-on-write must merge backing
#    data (qcow2 and raw backings, backing zero clusters with stale data,
#    overlay zero clusters hiding backing data, backing smaller than overlay,
#    3-deep chain, overlay cluster much larger than the backing's)
#  - refcount widths 1 to 64 bits (with a qemu snapshot from 2 bits up)
#  - refcount growth: 512-byte clusters, > 8 MiB of host file, so the refcount
#    table itself must grow (one 512-byte refcount block covers 256 clusters,
#    one 512-byte refcount table cluster covers 64 blocks = 8 MiB)
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io python3 cmp dd tr head stat sha256sum
need_tool "$IMGWRITE" "$IMGCAT"
tmpdir
cd "$T"

# w IMG EXPECTED OFFSET PATTERN LENGTH: write through imagecore and into the model
w() {
    local img=$1 exp=$2 off=$3 pat=$4 len=$5 out
    if ! out=$("$IMGWRITE" "$img" "$off" "$pat" "$len" 2>&1 </dev/null); then
        fail "imgwrite $img $off $pat $len failed: $out"
    fi
    pattern_into "$exp" "$off" "$pat" "$len"
}

# finish IMG EXPECTED LABEL [BACKING...]: all post-write checks
finish() {
    local img=$1 exp=$2 label=$3 b
    shift 3
    qcheck "$img" "$label"
    qclean_header "$img" "$label"
    qcompare "$exp" "$img" "$label"
    check_cat "$img" "$exp" "$label"
    for b in "$@"; do
        echo "check: backing file $b unchanged"
        sha256sum --quiet -c "$b.sha256" || fail "backing file $b was modified by writes to $label"
    done
}

# remember BACKING...: record checksums so finish() can verify them
remember() {
    local b
    for b in "$@"; do sha256sum "$b" >"$b.sha256"; done
}

# ---------------------------------------------------------------- matrix
for compat in 0.10 1.1; do
    for cs in 512 4096 65536 2097152; do
        S=$(matrix_size "$cs")
        img=m-$cs-$compat.qcow2
        exp=m-$cs-$compat.raw
        echo "== qcow2 compat=$compat cluster_size=$cs size=$S"
        qcreate -f qcow2 -o "compat=$compat,cluster_size=$cs" "$img" "$S"
        populate "$img" "$cs" "$S" "$compat"
        qemu_raw "$img" qcow2 "$exp"
        w "$img" "$exp" $((S / 8 + 3)) 0x01 $((cs + 10))            # hole, unaligned, spans clusters
        w "$img" "$exp" 20000 0x02 5000                             # inside allocated data
        w "$img" "$exp" $((82345 - 100)) 0x03 $((cs + 300))         # end of allocated data into a hole
        w "$img" "$exp" 0 0x04 1                                    # first byte
        w "$img" "$exp" $((S - 1)) 0x05 1                           # last byte
        w "$img" "$exp" $((S - cs - 5)) 0x06 $((cs + 5))            # ends exactly at the virtual end
        w "$img" "$exp" $((S / 4 + cs + 1)) 0x07 10                 # discarded cluster
        w "$img" "$exp" $((S / 4 + 2 * cs - 3)) 0x0d 6              # allocated | partly discarded
        w "$img" "$exp" $((5 * S / 8 + 333)) 0x08 $((5 * cs + 333)) # many clusters of holes
        w "$img" "$exp" $((5 * S / 8 + cs)) 0x09 77                 # overwrite part of the previous
        w "$img" "$exp" $((S / 2 + 2)) 0x0e $((cs - 4))             # inside one allocated cluster
        if [ "$compat" = 1.1 ]; then
            w "$img" "$exp" $((S / 2 + cs + 5)) 0x0a 100            # zero cluster with stale data
            w "$img" "$exp" $((S / 2 + 2 * cs)) 0x0b "$cs"          # exactly one zero cluster
            w "$img" "$exp" $((S / 2 + 3 * cs + 7 + cs / 2)) 0x0c 3 # unmapped zero cluster
            w "$img" "$exp" $((S * 3 / 4 + 1)) 0x0f $((cs + 20))    # zero clusters made in a hole
        fi
        finish "$img" "$exp" "$img"
        rm -f "$img" "$exp"
    done
done

# ---------------------------------------------------------------- overlays
echo "== qcow2 (v3, 64K) on qcow2 (v2, 4K)"
qcreate -f qcow2 -o compat=0.10,cluster_size=4096 base4k.qcow2 16M
qio base4k.qcow2 qcow2 \
    "write -P 0xb1 0 1M" \
    "write -P 0xb2 $((3 * MiB + 100)) 2M" \
    "write -P 0xb3 10M 64K"
qcreate -f qcow2 -o compat=1.1,cluster_size=65536 -b base4k.qcow2 -F qcow2 ov64k.qcow2 16M
qio ov64k.qcow2 qcow2 \
    "write -P 0xc1 $((512 * 1024 + 3)) 100K" \
    "write -z 4M 128K" \
    "discard $((4 * MiB + 256 * 1024)) 64K" \
    "write -z -u 10M 64K"
remember base4k.qcow2
qemu_raw ov64k.qcow2 qcow2 ov64k.raw
w ov64k.qcow2 ov64k.raw $((512 * 1024 + 50000)) 0x21 100     # overlay-allocated cluster
w ov64k.qcow2 ov64k.raw $((3 * MiB + 100 + 7)) 0x22 50       # COW: rest of cluster from backing
w ov64k.qcow2 ov64k.raw $((5 * MiB + 50)) 0x23 100           # straddles end of backing data
w ov64k.qcow2 ov64k.raw $((4 * MiB + 1000)) 0x24 10          # overlay zero cluster over backing data
w ov64k.qcow2 ov64k.raw $((4 * MiB + 256 * 1024 + 5)) 0x25 10 # overlay discarded cluster
w ov64k.qcow2 ov64k.raw $((10 * MiB + 3)) 0x26 5             # overlay unmapped zero over backing data
w ov64k.qcow2 ov64k.raw $((12 * MiB)) 0x27 $((3 * 65536 + 1)) # holes in both layers
w ov64k.qcow2 ov64k.raw $((1 * MiB - 10)) 0x28 20            # backing data | backing hole
w ov64k.qcow2 ov64k.raw $((2 * MiB - 65536 + 1)) 0x29 $((65536 * 2)) # two partial clusters, COW both ends
finish ov64k.qcow2 ov64k.raw "ov64k.qcow2 (on base4k.qcow2)" base4k.qcow2

echo "== qcow2 (v2, 512) on qcow2 (v3, 64K, zero clusters with stale data)"
qcreate -f qcow2 -o compat=1.1,cluster_size=65536 base64k.qcow2 4M
qio base64k.qcow2 qcow2 \
    "write -P 0x91 0 3M" \
    "write -z 1M 256K" \
    "write -z -u 2M 64K" \
    "discard $((2 * MiB + 128 * 1024)) 64K"
qcreate -f qcow2 -o compat=0.10,cluster_size=512 -b base64k.qcow2 -F qcow2 ov512.qcow2 4M
remember base64k.qcow2
qemu_raw ov512.qcow2 qcow2 ov512.raw
w ov512.qcow2 ov512.raw $((1 * MiB + 100)) 0x31 10           # backing zero cluster (stale 0x91 on disk)
w ov512.qcow2 ov512.raw $((1 * MiB - 300)) 0x32 600          # backing data | backing zero
w ov512.qcow2 ov512.raw $((2 * MiB + 7)) 0x33 3              # backing unmapped zero
w ov512.qcow2 ov512.raw $((2 * MiB + 128 * 1024 + 9)) 0x34 9 # backing discarded
w ov512.qcow2 ov512.raw 77 0x35 1                            # backing data
w ov512.qcow2 ov512.raw $((4 * MiB - 1)) 0x36 1              # backing hole, last byte
finish ov512.qcow2 ov512.raw "ov512.qcow2 (on base64k.qcow2)" base64k.qcow2

echo "== qcow2 (v3, 2M clusters) on qcow2 (v3, 512 clusters): one write, many backing clusters to copy"
qcreate -f qcow2 -o compat=1.1,cluster_size=512 base512.qcow2 4M
qio base512.qcow2 qcow2 \
    "write -P 0xf1 1000 3000" \
    "write -P 0xf2 $((1 * MiB + 7)) 100" \
    "write -P 0xf3 1536K 128K" \
    "write -z 1536K 64K" \
    "write -P 0xf5 $((2 * MiB - 700)) 1400"
qcreate -f qcow2 -o compat=1.1,cluster_size=2M -b base512.qcow2 -F qcow2 ov2m.qcow2 4M
remember base512.qcow2
qemu_raw ov2m.qcow2 qcow2 ov2m.raw
w ov2m.qcow2 ov2m.raw $((1 * MiB + 50)) 0xf4 10
w ov2m.qcow2 ov2m.raw $((3 * MiB)) 0xf6 1
finish ov2m.qcow2 ov2m.raw "ov2m.qcow2 (on base512.qcow2)" base512.qcow2

echo "== qcow2 on a raw backing smaller than the overlay"
head -c $((768 * 1024 + 1536)) /dev/urandom >smallraw.raw
qcreate -f qcow2 -o compat=1.1,cluster_size=65536 -b smallraw.raw -F raw ovraw.qcow2 2M
remember smallraw.raw
qemu_raw ovraw.qcow2 qcow2 ovraw.raw
w ovraw.qcow2 ovraw.raw 100 0x41 100                           # inside the backing
w ovraw.qcow2 ovraw.raw $((768 * 1024 + 100)) 0x42 10          # cluster holding the backing end
w ovraw.qcow2 ovraw.raw $((768 * 1024 + 1536)) 0x43 5          # exactly at the backing end
w ovraw.qcow2 ovraw.raw $((1 * MiB)) 0x44 65536                # past the end, whole cluster
w ovraw.qcow2 ovraw.raw $((1 * MiB + 65536 * 2 + 3)) 0x45 7    # past the end, partial cluster
finish ovraw.qcow2 ovraw.raw "ovraw.qcow2 (on smallraw.raw)" smallraw.raw

echo "== qcow2 (4K) on a qcow2 backing smaller than the overlay"
qcreate -f qcow2 -o compat=0.10,cluster_size=65536 small.qcow2 $((3 * MiB + 4608))
qio small.qcow2 qcow2 "write -P 0xd1 $((3 * MiB - 1000)) 5608"
qcreate -f qcow2 -o compat=1.1,cluster_size=4096 -b small.qcow2 -F qcow2 big.qcow2 16M
remember small.qcow2
qemu_raw big.qcow2 qcow2 big.raw
w big.qcow2 big.raw $((3 * MiB + 4096 + 10)) 0xd2 100          # cluster holding the backing end
w big.qcow2 big.raw $((3 * MiB - 10)) 0xd3 20
w big.qcow2 big.raw $((15 * MiB)) 0xd4 12345
finish big.qcow2 big.raw "big.qcow2 (on small.qcow2)" small.qcow2

echo "== 3-deep chain, writes on top"
qcreate -f qcow2 -o compat=1.1,cluster_size=65536 c0.qcow2 16M
qio c0.qcow2 qcow2 "write -P 0xe1 0 8M"
qcreate -f qcow2 -o compat=1.1,cluster_size=4096 -b c0.qcow2 -F qcow2 c1.qcow2 16M
qio c1.qcow2 qcow2 "write -P 0xe2 1M 1M" "write -z 2M 1M" "discard $((3 * MiB)) 64K"
qcreate -f qcow2 -o compat=1.1,cluster_size=65536 -b c1.qcow2 -F qcow2 c2.qcow2 16M
qio c2.qcow2 qcow2 "write -P 0xe3 $((1536 * 1024)) 1M"
remember c0.qcow2 c1.qcow2
qemu_raw c2.qcow2 qcow2 c2.raw
w c2.qcow2 c2.raw $((2 * MiB + 600 * 1024 + 5)) 0xe4 10       # mid zero over base data
w c2.qcow2 c2.raw $((3 * MiB + 1)) 0xe5 10                     # mid discarded over base data
w c2.qcow2 c2.raw $((6 * MiB + 1)) 0xe6 10                     # base data only
w c2.qcow2 c2.raw $((1 * MiB + 4095)) 0xe7 2                   # mid data
w c2.qcow2 c2.raw $((1536 * 1024 + 9)) 0xe8 9                  # top data
w c2.qcow2 c2.raw $((9 * MiB)) 0xe9 1                          # nothing below
finish c2.qcow2 c2.raw "c2.qcow2 (3-deep chain)" c0.qcow2 c1.qcow2

# ---------------------------------------------------------------- refcount growth
# header field refcount_table_clusters (big-endian u32 at byte 56)
rt_clusters() {
    python3 -c 'import struct,sys; f=open(sys.argv[1],"rb"); f.seek(56); print(struct.unpack(">I", f.read(4))[0])' "$1"
}
for compat in 0.10 1.1; do
    img=grow-$compat.qcow2
    exp=grow-$compat.raw
    echo "== refcount growth: cluster_size=512 compat=$compat, 64M, writes spread over the image"
    qcreate -f qcow2 -o "compat=$compat,cluster_size=512" "$img" 64M
    qio "$img" qcow2 "write -P 0x71 0 64K" "write -P 0x72 32M 64K"
    qemu_raw "$img" qcow2 "$exp"
    before=$(rt_clusters "$img")
    # deterministic pseudo-random small writes (metadata allocations interleave
    # with data) plus large writes that push the host file well past 8 MiB
    while read -r off pat len; do
        w "$img" "$exp" "$off" "$pat" "$len"
    done < <(python3 - <<'EOF'
import random
r = random.Random(4242)
size = 64 << 20
for i in range(150):
    off = r.randrange(0, size)
    ln = min(r.randint(1, 6000), size - off)
    print(off, hex(r.randint(1, 255)), ln)
for i in range(32):
    print(i * (2 << 20) + 7777, hex(0x80 + i), 300 * 1024)
EOF
    )
    after=$(rt_clusters "$img")
    echo "refcount table: $before -> $after clusters, host file $(stat -c %s "$img") bytes"
    [ "$(stat -c %s "$img")" -gt $((9 * MiB)) ] || fail "test setup: host file of $img did not exceed 9 MiB"
    [ "$after" -gt "$before" ] || fail "$img: refcount table did not grow ($before -> $after clusters) although the host file exceeds what it can cover"
    finish "$img" "$exp" "$img"
    rm -f "$img" "$exp"
done

# ---------------------------------------------------------------- refcount widths
# Every refcount_bits qemu allows, 512-byte clusters so that refcount blocks
# fill and new ones are allocated; with 2 bits and more a qemu snapshot first,
# so that writes copy shared clusters and move refcounts down as well as up.
for bits in 1 2 4 8 16 32 64; do
    img=rc-$bits.qcow2
    exp=rc-$bits.raw
    echo "== refcount_bits=$bits cluster_size=512"
    qcreate -f qcow2 -o "cluster_size=512,refcount_bits=$bits" "$img" 8M
    qio "$img" qcow2 "write -P 0x31 0 256K" "write -P 0x32 3M 100K"
    [ "$bits" -gt 1 ] && qemu-img snapshot -c s "$img"
    qemu_raw "$img" qcow2 "$exp"
    w "$img" "$exp" 1000 0x41 5000                       # shared clusters: copy on write
    w "$img" "$exp" $((3 * MiB + 511)) 0x42 2             # one byte on each side of a cluster edge
    w "$img" "$exp" $((5 * MiB)) 0x43 $((600 * 1024))     # many new clusters and refcount blocks
    w "$img" "$exp" $((8 * MiB - 700)) 0x44 700           # the last bytes
    finish "$img" "$exp" "$img"
    rm -f "$img" "$exp"
done

echo "PASS: write matrix"
