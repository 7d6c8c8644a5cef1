#!/usr/bin/env bash
# imgfs bitmap against qemu-img bitmap: the same steps on two copies of one
# image leave the same bitmaps (names, flags, granularity, every bit, read
# straight from the file), imgfs's copy passes qemu-img check, and qemu
# keeps imgfs's bitmaps in step with its own writes afterwards. Errors exit
# as qemu-img's, in one line; a failed step leaves the image untouched.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir

CASES=0
# bits Q I LABEL: the bitmaps of the two images agree, bit for bit, and in
# qemu-img info's JSON; imgfs's image is check-clean
bits() {
    local q=$1 i=$2 label=$3
    diff <(python3 "$BITMAP_RUNS" "$q") <(python3 "$BITMAP_RUNS" "$i") || fail "$label: bitmaps differ from qemu-img's"
    diff <(qemu-img info --output=json "$q" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"].get("bitmaps"))') \
        <(qemu-img info --output=json "$i" | python3 -c 'import json,sys; print(json.load(sys.stdin)["format-specific"]["data"].get("bitmaps"))') ||
        fail "$label: qemu-img info lists other bitmaps"
    qcheck "$i" "$label"
    CASES=$((CASES + 1))
}
# both ARGS...: qemu-img bitmap ARGS on $Q and imgfs bitmap ARGS on $I (the
# image operand is the word IMG), both succeed, and the bitmaps agree.
both() {
    local qa=() ia=() a
    for a in "$@"; do
        if [[ $a == IMG ]]; then qa+=("$Q"); ia+=("$I"); else qa+=("$a"); ia+=("$a"); fi
    done
    qemu-img bitmap "${qa[@]}" || fail "qemu-img bitmap $* failed"
    "$IMGFS" bitmap "${ia[@]}" || fail "imgfs bitmap $* failed"
    bits "$Q" "$I" "bitmap $*"
}
# writes CMD...: the same qemu-io writes on both images
writes() { qio "$Q" qcow2 "$@"; qio "$I" qcow2 "$@"; }

for cs in 512 4k 64k 2M; do
    Q=$T/q-$cs.qcow2 I=$T/i-$cs.qcow2
    qcreate -f qcow2 -o cluster_size=$cs "$Q" 64M
    cp "$Q" "$I"
    both --add IMG plain                    # the default granularity follows the cluster size
    both --add -g 512 --disable IMG fine    # steps in order: added, then disabled
    both --add -g 2M IMG coarse
    writes "write -P 1 3000 10" "write -P 2 1M 70k" "write -P 3 33554431 2" "write -P 4 67108863 1"
    bits "$Q" "$I" "qemu-io writes after imgfs bitmap ($cs)"
    both --enable IMG fine
    writes "write -P 5 20M 300k"
    both --add IMG merged --merge plain --merge fine    # fine into coarser, twice
    both --merge coarse IMG fine                        # coarse into finer
    both --merge fine IMG fine                          # into itself
    both --disable --enable --clear IMG plain
    both --remove IMG coarse
    writes "write -P 6 40M 4k"
    bits "$Q" "$I" "writes after remove ($cs)"
    both --remove IMG plain
    both --remove IMG merged
    both --remove IMG fine                              # the last one: the extension goes
    python3 - "$I" <<'EOF' || fail "the bitmaps extension or its autoclear bit stayed after the last remove"
import struct, sys
d = open(sys.argv[1], "rb").read()
off = struct.unpack_from(">I", d, 100)[0]
assert struct.unpack_from(">Q", d, 88)[0] & 1 == 0
while True:
    t, l = struct.unpack_from(">II", d, off)
    if t == 0: break
    assert t != 0x23852875
    off += 8 + ((l + 7) & ~7)
EOF
    both --add IMG again
    echo "   cluster size $cs: add, disable, enable, merge, clear, remove as qemu-img"
done

# A bitmap of several clusters (4 KiB clusters, 512-byte granularity over
# 64 MiB: 16 KiB of bits), merged from another image with -b/-F.
Q=$T/q-big.qcow2 I=$T/i-big.qcow2 S=$T/src.qcow2
qcreate -f qcow2 -o cluster_size=4096 "$Q" 64M
cp "$Q" "$I"
qcreate -f qcow2 "$S" 64M
qemu-img bitmap --add -g 4k "$S" theirs
qio "$S" qcow2 "write -P 9 0 1" "write -P 9 30M 5M" "write -P 9 67108000 864"
both --add -g 512 IMG mine
both --merge theirs -b "$S" -F qcow2 IMG mine
both --add -g 64k IMG mine2 --merge theirs -b "$S"
echo "   a 16 KiB bitmap merged from another image: $(python3 "$BITMAP_RUNS" "$I" | grep ^mine | head -1)"

# The header keeps its backing file and other extensions when the bitmaps
# extension comes and goes; so does an image with an external data file.
base=$T/base.qcow2
qcreate -f qcow2 "$base" 8M
qio "$base" qcow2 "write -P 7 0 1M"
Q=$T/q-ov.qcow2 I=$T/i-ov.qcow2
qcreate -f qcow2 -b "$base" -F qcow2 "$Q"
cp "$Q" "$I"
both --add IMG b
both --remove IMG b
both --add IMG b
[[ $(qemu-img info --output=json "$I" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["backing-filename"], d["backing-filename-format"])') == "$base qcow2" ]] ||
    fail "the backing file reference changed"
qemu-img compare -q "$base" "$I" || fail "the overlay reads other content after bitmap changes"
Q=$T/q-df.qcow2 I=$T/i-df.qcow2
qcreate -f qcow2 -o data_file="$T/q-df.data" "$Q" 8M
qcreate -f qcow2 -o data_file="$T/i-df.data" "$I" 8M
both --add IMG d
writes "write -P 8 1M 1M"
bits "$Q" "$I" "writes into an image with a data file"
echo "   backing file and data file references kept"

# Errors: the exit code qemu-img gives, one line; and the image unchanged.
E=$T/err.qcow2
qcreate -f qcow2 "$E" 16M
qemu-img bitmap --add "$E" b0
qcreate -f qcow2 -o compat=0.10 "$T/v2.qcow2" 16M
qcreate -f raw "$T/r.raw" 16M
qcreate -f qcow2 "$T/small.qcow2" 8M
qemu-img bitmap --add "$T/small.qcow2" s
long=$(printf 'n%.0s' {1..1024})
for args in "--add $E b0" "--remove $E nope" "--add -g 1000 $E x" "--add -g 256 $E x" "--add -g 4G $E x" \
    "$E b0" "--clear --add $E b1" "-g 4096 --remove $E b0" "-b $T/small.qcow2 --add $E z" "-F qcow2 --add $E z" \
    "--add $E" "--add $E b0 extra" "--add $T/v2.qcow2 x" "--add -f raw $T/r.raw x" "--add $E $long" \
    "--merge nope $E b0" "--merge s -b $T/small.qcow2 $E b0" "--merge b0 -b $T/nofile $E b0" "--add $T/nofile x"; do
    cp "$E" "$T/before"
    # shellcheck disable=SC2086  # the words are the arguments
    errs_as_qemu bitmap $args
    cp "$T/before" "$E"
    # shellcheck disable=SC2086
    "$IMGFS" bitmap $args 2>/dev/null && fail "imgfs bitmap $args succeeded"
    cmp -s "$E" "$T/before" || fail "imgfs bitmap $args changed the image"
    CASES=$((CASES + 1))
done
errs_as_qemu bitmap --add "$E" ""
# All or nothing: qemu-img keeps the first add of "--add x --add x";
# imgfs leaves the image as it was.
cp "$E" "$T/before"
"$IMGFS" bitmap --add --add "$E" x 2>/dev/null && fail "a second add of x succeeded"
cmp -s "$E" "$T/before" || fail "a failed second step left the first one's change"
# A bitmap marked in_use (a crash while qemu wrote) can only be removed.
python3 "$HERE/tools/bitmap_in_use.py" "$E"
for op in --clear --enable --disable "--merge b0"; do
    # shellcheck disable=SC2086
    errs_as_qemu bitmap $op "$E" b0
done
errs_as_qemu bitmap --add "$E" b0
cp "$E" "$T/q-inuse.qcow2"
qemu-img bitmap --remove "$T/q-inuse.qcow2" b0
"$IMGFS" bitmap --remove "$E" b0 || fail "imgfs could not remove an in_use bitmap"
bits "$T/q-inuse.qcow2" "$E" "remove of an in_use bitmap"
echo "PASS: bitmap subcommand ($CASES cases agree with qemu-img)"
