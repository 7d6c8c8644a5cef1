#!/usr/bin/env bash
# Read path against qemu: images written by qemu-io, read back through imagecore
# (imgcat, imgmap). Expected content = `qemu-img convert -O raw`, expected
# allocation map = `qemu-img map --output=json`.
#  - every cluster size 512 / 4K / 64K / 2M with compat 0.10 and 1.1
#  - overlays: qcow2 on qcow2 (different cluster sizes and versions), qcow2 on
#    raw, backing smaller than the overlay, a 3-deep chain, relative backing
#    names (resolved against the overlay's directory, never the cwd).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io python3 cmp dd tr head stat
need_tool "$IMGCAT" "$IMGMAP"
tmpdir

# verify IMG FMT LABEL CS: full read, partial reads, map
verify() {
    local img=$1 fmt=$2 label=$3 cs=$4 S ranges
    S=$(vsize "$img")
    qemu_raw "$img" "$fmt" "$T/expected.raw"
    check_cat "$img" "$T/expected.raw" "$label"
    mapfile -t ranges < <(standard_ranges "$cs" "$S")
    check_cat_ranges "$img" "$T/expected.raw" "$label" "${ranges[@]}"
    check_map "$img" "$fmt" "$label"
    rm -f "$T/expected.raw"
}

# ---------------------------------------------------------------- matrix
for compat in 0.10 1.1; do
    for cs in 512 4096 65536 2097152; do
        S=$(matrix_size "$cs")
        img=$T/m-$cs-$compat.qcow2
        echo "== qcow2 compat=$compat cluster_size=$cs size=$S"
        qcreate -f qcow2 -o "compat=$compat,cluster_size=$cs" "$img" "$S"
        populate "$img" "$cs" "$S" "$compat"
        verify "$img" qcow2 "m-$cs-$compat.qcow2" "$cs"
        rm -f "$img"
    done
done

# ---------------------------------------------------------------- overlays
cd "$T"

echo "== qcow2 (v3, 64K) on qcow2 (v2, 4K), data in both layers"
qcreate -f qcow2 -o compat=0.10,cluster_size=4096 base4k.qcow2 16M
qio base4k.qcow2 qcow2 \
    "write -P 0xb1 0 1M" \
    "write -P 0xb2 $((3 * MiB + 100)) 2M" \
    "write -P 0xb3 10M 64K" \
    "write -P 0xb4 $((14 * MiB + 5)) 12345"
qcreate -f qcow2 -o compat=1.1,cluster_size=65536 -b base4k.qcow2 -F qcow2 ov64k.qcow2 16M
qio ov64k.qcow2 qcow2 \
    "write -P 0xc1 $((512 * 1024 + 3)) 100K" \
    "write -z 4M 128K" \
    "discard $((4 * MiB + 256 * 1024)) 64K" \
    "write -z -u 10M 64K" \
    "write -P 0xc2 15M 1M" \
    "write -z $((14 * MiB + 1000)) 3000"
verify ov64k.qcow2 qcow2 "ov64k.qcow2 (on base4k.qcow2)" 65536
verify base4k.qcow2 qcow2 "base4k.qcow2" 4096

echo "== qcow2 (v2, 512) on qcow2 (v3, 64K, zero clusters with stale data)"
qcreate -f qcow2 -o compat=1.1,cluster_size=65536 base64k.qcow2 4M
qio base64k.qcow2 qcow2 \
    "write -P 0x91 0 3M" \
    "write -z 1M 256K" \
    "write -z -u 2M 64K" \
    "discard $((2 * MiB + 128 * 1024)) 64K"
qcreate -f qcow2 -o compat=0.10,cluster_size=512 -b base64k.qcow2 -F qcow2 ov512.qcow2 4M
qio ov512.qcow2 qcow2 \
    "write -P 0x92 $((1 * MiB - 700)) 1500" \
    "write -P 0x93 $((2 * MiB + 60000)) 10000" \
    "write -z $((512 * 1024)) 4096" \
    "discard 768K 2048" \
    "write -P 0x94 $((4 * MiB - 512)) 512"
verify ov512.qcow2 qcow2 "ov512.qcow2 (on base64k.qcow2)" 512

echo "== qcow2 on raw backing (-F raw), sparse raw file"
truncate -s 8M rawbase.raw
qio rawbase.raw raw \
    "write -P 0xa1 1M 1M" \
    "write -P 0xa2 $((5 * MiB + 3)) 77777" \
    "write -P 0xa3 $((8 * MiB - 4096)) 4096"
qcreate -f qcow2 -o compat=1.1,cluster_size=65536 -b rawbase.raw -F raw ovraw.qcow2 8M
qio ovraw.qcow2 qcow2 \
    "write -P 0xa4 $((1 * MiB + 65536 * 3 + 17)) 200" \
    "write -z $((1 * MiB + 512 * 1024)) 64K" \
    "write -P 0xa5 3M 100K" \
    "discard $((5 * MiB)) 64K"
verify ovraw.qcow2 qcow2 "ovraw.qcow2 (on rawbase.raw)" 65536
verify rawbase.raw raw "rawbase.raw" 65536

echo "== overlay larger than its qcow2 backing (reads past the backing end are zeros)"
small=$((3 * MiB + 4608))
qcreate -f qcow2 -o compat=1.1,cluster_size=65536 small.qcow2 "$small"
qio small.qcow2 qcow2 \
    "write -P 0xd1 $((3 * MiB - 1000)) 5608" \
    "write -P 0xd5 0 64K"
qcreate -f qcow2 -o compat=1.1,cluster_size=4096 -b small.qcow2 -F qcow2 big.qcow2 16M
qio big.qcow2 qcow2 \
    "write -P 0xd2 $((3 * MiB + 4096 + 10)) 100" \
    "write -P 0xd3 $((8 * MiB)) 4096"
verify big.qcow2 qcow2 "big.qcow2 (16M on 3M+4608 qcow2)" 4096

echo "== overlay larger than its raw backing"
head -c $((768 * 1024 + 1536)) /dev/zero | tr '\000' '\142' >smallraw.raw
qcreate -f qcow2 -o compat=1.1,cluster_size=65536 -b smallraw.raw -F raw bigonraw.qcow2 2M
qio bigonraw.qcow2 qcow2 \
    "write -P 0xd4 $((768 * 1024 + 100)) 10" \
    "write -P 0xd6 $((1536 * 1024)) 1000"
verify bigonraw.qcow2 qcow2 "bigonraw.qcow2 (2M on 768K+1536 raw)" 65536

echo "== 3-deep chain"
qcreate -f qcow2 -o compat=1.1,cluster_size=65536 c0.qcow2 16M
qio c0.qcow2 qcow2 "write -P 0xe1 0 8M" "write -P 0xe5 $((12 * MiB + 1)) 1M"
qcreate -f qcow2 -o compat=1.1,cluster_size=4096 -b c0.qcow2 -F qcow2 c1.qcow2 16M
qio c1.qcow2 qcow2 \
    "write -P 0xe2 1M 1M" \
    "write -z 2M 1M" \
    "discard $((3 * MiB)) 64K" \
    "write -P 0xe6 $((12 * MiB + 4096)) 8192"
qcreate -f qcow2 -o compat=0.10,cluster_size=65536 -b c1.qcow2 -F qcow2 c2.qcow2 16M
qio c2.qcow2 qcow2 \
    "write -P 0xe3 $((1536 * 1024)) 1M" \
    "write -P 0xe4 $((7 * MiB + 1)) 10" \
    "write -P 0xe7 $((12 * MiB + 100)) 100"
verify c2.qcow2 qcow2 "c2.qcow2 (3-deep chain)" 65536
verify c1.qcow2 qcow2 "c1.qcow2 (2-deep chain)" 4096

# Relative backing names must be resolved against the overlay's directory.
# A decoy with the same relative name is placed where a cwd-relative lookup
# would find it; it has the same size but different content.
echo "== relative backing name, same directory"
mkdir -p rel/a
qcreate -f qcow2 rel/a/base.qcow2 4M
qio rel/a/base.qcow2 qcow2 "write -P 0x51 0 4M"
qcreate -f qcow2 rel/decoy.qcow2 4M
qio rel/decoy.qcow2 qcow2 "write -P 0xee 0 4M"
cp rel/decoy.qcow2 rel/base.qcow2
(cd rel/a && qcreate -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2 4M)
qio rel/a/ov.qcow2 qcow2 "write -P 0x52 1M 100"
qemu_raw rel/a/ov.qcow2 qcow2 "$T/rel-expected.raw"
cmp -s <(slice "$T/rel-expected.raw" 0 1) <(printf '\121') || fail "test setup: qemu did not use rel/a/base.qcow2"
(cd "$T/rel" && check_cat a/ov.qcow2 "$T/rel-expected.raw" "a/ov.qcow2 from cwd with decoy base.qcow2")
(cd / && check_cat "$T/rel/a/ov.qcow2" "$T/rel-expected.raw" "rel/a/ov.qcow2 by absolute path from /")
(cd "$T/rel/a" && check_cat ov.qcow2 "$T/rel-expected.raw" "ov.qcow2 from its own directory")
(cd "$T/rel" && check_map a/ov.qcow2 qcow2 "a/ov.qcow2 from cwd with decoy")

echo "== relative backing name in a sibling directory (../base/b.qcow2)"
mkdir -p rel2/base rel2/vm rel2/decoy/base rel2/decoy/x
qcreate -f qcow2 -o cluster_size=4096 rel2/base/b.qcow2 4M
qio rel2/base/b.qcow2 qcow2 "write -P 0x61 0 2M"
qcreate -f qcow2 -o cluster_size=4096 rel2/decoy/base/b.qcow2 4M
qio rel2/decoy/base/b.qcow2 qcow2 "write -P 0xef 0 4M"
(cd rel2/vm && qcreate -f qcow2 -b ../base/b.qcow2 -F qcow2 ov.qcow2 4M)
qio rel2/vm/ov.qcow2 qcow2 "write -P 0x62 $((1 * MiB + 3)) 5000"
qemu_raw rel2/vm/ov.qcow2 qcow2 "$T/rel2-expected.raw"
cmp -s <(slice "$T/rel2-expected.raw" 0 1) <(printf '\141') || fail "test setup: qemu did not use rel2/base/b.qcow2"
(cd "$T/rel2/decoy/x" && check_cat "$T/rel2/vm/ov.qcow2" "$T/rel2-expected.raw" "rel2/vm/ov.qcow2 from a cwd with a decoy ../base/b.qcow2")
(cd "$T/rel2/decoy/x" && check_cat ../../vm/ov.qcow2 "$T/rel2-expected.raw" "../../vm/ov.qcow2 (relative image path)")
(cd "$T/rel2/decoy/x" && check_map "$T/rel2/vm/ov.qcow2" qcow2 "rel2/vm/ov.qcow2 from a cwd with a decoy")

# Not covered: `qemu-img create -b` without -F (qemu 7.2 refuses it).
echo "PASS: read matrix"
