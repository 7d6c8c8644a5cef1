#!/usr/bin/env bash
# imgfs amend -o compat=, refcount_bits=, data_file= against qemu-img amend:
# the same option on two copies of one image exits alike; where both
# succeed imgfs's copy passes qemu-img check (no leaks), qemu-img info shows
# what it shows for qemu's copy, and the disk and every snapshot read the
# same. Downgrades expand zero clusters (shared with snapshots too);
# refcount widths are rebuilt; what v2 cannot hold is refused.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir
cd "$T"

specific() {  # IMG: qemu-img info's format-specific data and backing file
    qemu-img info --output=json "$1" | python3 -c '
import json, sys
d = json.load(sys.stdin)
print(d["format-specific"], d.get("backing-filename"), d.get("virtual-size"))'
}
snapshots() { qemu-img snapshot -l "$1" | awk 'NR > 2 { print $2 }'; }
CASES=0
# amend_as_qemu SRC OPTIONS: both amend a copy of SRC; same exit; if both
# succeed, same info, clean check and the same disk and snapshots.
amend_as_qemu() {
    local src=$1 opt=$2 qrc=0 irc=0 s
    cp "$src" q.qcow2
    cp "$src" i.qcow2
    qemu-img amend -o "$opt" q.qcow2 2>/dev/null || qrc=$?
    "$IMGFS" amend -o "$opt" i.qcow2 2>err.txt || irc=$?
    [[ $qrc == "$irc" ]] || fail "amend -o $opt of $src: exit $irc ($(cat err.txt)), qemu-img $qrc"
    CASES=$((CASES + 1))
    if [[ $irc != 0 ]]; then
        [[ $(wc -l <err.txt) == 1 ]] || fail "amend -o $opt of $src: not one line: $(cat err.txt)"
        cmp -s "$src" i.qcow2 || fail "a refused amend -o $opt changed $src"
        return 0
    fi
    qcheck i.qcow2 "amend -o $opt of $src"
    [[ $(specific i.qcow2) == "$(specific q.qcow2)" ]] ||
        fail "amend -o $opt of $src: $(specific i.qcow2), qemu-img: $(specific q.qcow2)"
    # Against the image before the amend, not qemu's result: qemu-img 7.2's
    # downgrade writes zeros into a cluster a snapshot still reads.
    qemu-img compare -q "$src" i.qcow2 || fail "amend -o $opt of $src: the disk changed"
    for s in $(snapshots "$src"); do
        qemu-img convert -l "$s" -O raw "$src" want.raw
        qemu-img convert -l "$s" -O raw i.qcow2 i.raw
        cmp -s want.raw i.raw || fail "amend -o $opt of $src: snapshot $s changed"
    done
    # qemu writes on: the amended image stays clean
    qio i.qcow2 qcow2 "write -P 0x5a 3M 200k" "write -z 7M 64k"
    qcheck i.qcow2 "writes after amend -o $opt of $src"
}

qcreate -f qcow2 base.qcow2 10M
qio base.qcow2 qcow2 "write -P 9 0 10M"
# plain: lazy refcounts, data, zero clusters with and without a host cluster
qcreate -f qcow2 -o lazy_refcounts=on plain.qcow2 10M
qio plain.qcow2 qcow2 "write -P 1 0 1M" "write -z 2M 128k" "write -z 512k 64k"
# overlay: zero clusters over a backing file, some shared with a snapshot
# (the one at 8M keeps a host cluster that snapshot s1 reads)
qcreate -f qcow2 -b base.qcow2 -F qcow2 overlay.qcow2
qio overlay.qcow2 qcow2 "write -z 1M 128k" "write -P 2 5M 64k" "write -P 3 8M 64k"
qemu-img snapshot -c s1 overlay.qcow2
qio overlay.qcow2 qcow2 "write -z 6M 64k" "write -z 1M 64k" "write -z 8M 64k"
qemu-img snapshot -c s2 overlay.qcow2
# v2 with a snapshot and a backing file; v2 with 512-byte clusters
qcreate -f qcow2 -o compat=0.10 -b base.qcow2 -F qcow2 old.qcow2
qio old.qcow2 qcow2 "write -P 3 0 64k"
qemu-img snapshot -c s1 old.qcow2
qcreate -f qcow2 -o compat=0.10,cluster_size=512 small.qcow2 10M
qio small.qcow2 qcow2 "write -P 4 1000 100k"
# refcounts 64 bits wide; zstd without compressed clusters, and with
qcreate -f qcow2 -o refcount_bits=64 wide.qcow2 10M
qio wide.qcow2 qcow2 "write -P 5 0 2M"
qcreate -f qcow2 -o compression_type=zstd zstd.qcow2 10M
qio zstd.qcow2 qcow2 "write -P 6 0 1M"
qcreate -f qcow2 -o compression_type=zstd zstdc.qcow2 10M
qio zstdc.qcow2 qcow2 "write -c -P 6 0 64k"
qcreate -f qcow2 -o extended_l2=on,cluster_size=64k ext.qcow2 10M

for src in plain overlay old small wide zstd zstdc ext; do
    for opt in compat=0.10 compat=1.1 refcount_bits=1 refcount_bits=2 refcount_bits=8 refcount_bits=64 \
        compat=1.1,refcount_bits=8 compat=0.10,refcount_bits=16 compat=0.10,lazy_refcounts=on \
        compat=1.1,lazy_refcounts=on refcount_bits=3; do
        amend_as_qemu "$src.qcow2" "$opt"
    done
    echo "   $src: $CASES cases so far agree with qemu-img"
done

# Bitmaps: v2 keeps none. qemu-img leaves them behind as inconsistent (and
# leaks their clusters); imgfs removes them, and warns.
qcreate -f qcow2 bm.qcow2 10M
qemu-img bitmap --add bm.qcow2 b
qio bm.qcow2 qcow2 "write -P 7 0 1M"
out=$("$IMGFS" amend -o compat=0.10 bm.qcow2 2>&1) || fail "amend of an image with bitmaps: $out"
[[ $out == *"bitmaps"* ]] || fail "no warning that the bitmaps went: $out"
qcheck bm.qcow2 "downgrade with bitmaps"
[[ $(qemu-img info bm.qcow2 2>&1) != *bitmap* ]] || fail "bitmaps still listed after a downgrade"

# data_file: renamed in place (qemu-img does not look at the new name
# either); refused where there is none.
qcreate -f qcow2 -o data_file=one.data df.qcow2 10M
qio df.qcow2 qcow2 "write -P 8 0 1M"
cp one.data two.data
"$IMGFS" amend -o data_file=two.data df.qcow2 || fail "amend -o data_file"
[[ $(qemu-img info --output=json df.qcow2 | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"]["data-file"])') == two.data ]] ||
    fail "the data file name was not changed"
rm one.data
qcheck df.qcow2 "after data_file="
qemu-io -f qcow2 -c "read -P 8 0 1M" df.qcow2 | grep -q "read 1048576" || fail "the data reads other bytes through the new name"
errs_as_qemu amend -o data_file=x.data plain.qcow2
errs_as_qemu amend -o data_file_raw=on df.qcow2
errs_as_qemu amend -o compat=0.10 df.qcow2
echo "PASS: amend compat, refcount_bits, data_file ($CASES cases agree with qemu-img)"
