#!/usr/bin/env bash
# imgfs resize and imgfs commit against qemu-img resize / commit: the same
# operations on twin images leave images qemu-img check calls clean (no
# leaks either), with the same virtual size and the same content, and for
# commit the same map of the emptied top. Refusals match qemu's.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir
cd "$T"

# twins NAME: q-NAME (for qemu) and i-NAME (for imgfs) copies of NAME
twins() { cp "$1" "q-$1"; cp "$1" "i-$1"; }
# same_images A B LABEL: equal size and content, both clean
same_images() {
    local a=$1 b=$2 label=$3
    qcheck "$b" "$label"
    [[ $(vsize "$a") == "$(vsize "$b")" ]] || fail "$label: virtual size $(vsize "$b"), qemu made $(vsize "$a")"
    qemu-img compare -q "$a" "$b" || fail "$label: content differs from qemu's"
}
# both_resize IMG ARGS...: run the same resize with qemu-img and imgfs
both_resize() {
    local img=$1
    shift
    qemu-img resize -q "q-$img" "$@" || fail "qemu-img resize q-$img $*"
    "$IMGFS" resize -q "i-$img" "$@" || fail "imgfs resize i-$img $*"
    same_images "q-$img" "i-$img" "resize $img $*"
}

echo "== resize"
# qemu-img 7.2, growing an image, leaves the bytes a shrink cut off inside
# the last cluster visible again; imgfs writes zeros there, as truncate on
# a file does. The comparison after that grow zeroes that range in qemu's.
for spec in "compat=0.10 65536 +1G" "cluster_size=512 512 +100M" "cluster_size=64k 65536 +1G" \
            "cluster_size=2M 2097152 +1G" "extended_l2=on 65536 +1G" "refcount_bits=1,cluster_size=4k 4096 +1G"; do
    # shellcheck disable=SC2086
    set -- $spec
    opts=$1 cs=$2 grow=$3
    rm -f ./*.qcow2
    qcreate -f qcow2 -o "$opts" r.qcow2 10M
    qio r.qcow2 qcow2 "write -P 0x11 0 3M" "write -P 0x12 5000000 70000" "write -z 9M 512k"
    twins r.qcow2
    both_resize r.qcow2 "$grow"       # the L1 table grows
    both_resize r.qcow2 --shrink 4M   # data past 4M goes, L2 tables past it too
    both_resize r.qcow2 5000192       # grow from a cluster boundary
    both_resize r.qcow2 --shrink 3000320
    qemu-img resize -q q-r.qcow2 +64M
    "$IMGFS" resize -q i-r.qcow2 +64M
    qcheck i-r.qcow2 "resize $opts +64M"
    qemu-img convert -O raw q-r.qcow2 q.raw
    qemu-img convert -O raw i-r.qcow2 i.raw
    tail=$(( (cs - 3000320 % cs) % cs ))
    if (( tail > 0 )); then
        dd if=/dev/zero of=q.raw bs=512 seek=$((3000320 / 512)) count=$((tail / 512)) conv=notrunc status=none
    fi
    cmp -s q.raw i.raw || fail "resize $opts +64M: content differs from qemu's (old tail zeroed)"
    echo "   $opts: grow, shrink and grow again agree with qemu-img"
done

echo "== resize with snapshots, compressed clusters, a larger backing file"
rm -f ./*.qcow2
qcreate -f qcow2 s.qcow2 8M
qio s.qcow2 qcow2 "write -P 0x21 0 8M"
qemu-img snapshot -c before s.qcow2
qio s.qcow2 qcow2 "write -P 0x22 1M 1M"
twins s.qcow2
both_resize s.qcow2 --shrink 2M
both_resize s.qcow2 +30M
qemu-img convert -l before -O raw q-s.qcow2 q-snap.raw
qemu-img convert -l before -O raw i-s.qcow2 i-snap.raw
cmp -s q-snap.raw i-snap.raw || fail "the snapshot taken before the resize changed"
python3 -c "import sys; sys.stdout.buffer.write(bytes(range(256)) * 32768)" > pat.raw
qemu-img convert -q -c -f raw -O qcow2 pat.raw c.qcow2
twins c.qcow2
both_resize c.qcow2 --shrink 5M
both_resize c.qcow2 8M
qcreate -f qcow2 big.qcow2 20M
qio big.qcow2 qcow2 "write -P 0x31 0 20M"
qcreate -f qcow2 -b big.qcow2 -F qcow2 o.qcow2 5M
twins o.qcow2
both_resize o.qcow2 15M          # the backing file's bytes past 5M must not show
echo "   snapshots kept, compressed clusters dropped, backing data hidden: as qemu-img"

echo "== resize refusals"
qcreate -f qcow2 -o compat=0.10 v2.qcow2 8M
qemu-img snapshot -c s v2.qcow2
if "$IMGFS" resize v2.qcow2 +1M 2>err; then fail "resized a v2 image with snapshots (qemu-img refuses)"; fi
echo "   v2 with snapshots: $(cat err)"
qcreate -f qcow2 r.qcow2 10M
if "$IMGFS" resize r.qcow2 -1M 2>err; then fail "shrank without --shrink"; fi
grep -q -- "--shrink" err || fail "the refusal does not say to use --shrink: $(cat err)"
[[ $(vsize r.qcow2) == $((10 * MiB)) ]] || fail "a refused shrink changed the size"
"$IMGFS" resize -q --shrink r.qcow2 -1M || fail "imgfs resize --shrink FILE -1M"
[[ $(vsize r.qcow2) == $((9 * MiB)) ]] || fail "resize --shrink -1M: size $(vsize r.qcow2)"
if "$IMGFS" resize nosuch.qcow2 +1M 2>err; then fail "resized a missing file"; fi
grep -q nosuch.qcow2 err || fail "the error does not name the file: $(cat err)"
truncate -s 1M disk.raw
"$IMGFS" resize -q -f raw disk.raw +3M
[[ $(stat -c %s disk.raw) == $((4 * MiB)) ]] || fail "raw resize: size $(stat -c %s disk.raw)"
# what is printed and the exit codes, side by side with qemu-img
cp disk.raw q-out.raw; cp disk.raw i-out.raw
for args in "+1M" "--shrink -1M" "-1M"; do
    qrc=0 irc=0
    # shellcheck disable=SC2086
    qout=$(qemu-img resize -f raw q-out.raw $args 2>/dev/null) || qrc=$?
    # shellcheck disable=SC2086
    iout=$("$IMGFS" resize -f raw i-out.raw $args 2>/dev/null) || irc=$?
    [[ $qout == "$iout" && $qrc == "$irc" ]] ||
        fail "resize $args: imgfs printed '$iout' (exit $irc), qemu-img '$qout' (exit $qrc)"
done
echo "   refusals as qemu-img; raw images resize; output and exit codes as qemu-img's"

echo "== commit"
# make_chain PREFIX: base <- mid <- top, top larger than the rest, with
# data, zeros and compressed clusters in every layer
make_chain() {
    local p=$1
    qcreate -f qcow2 "$p-base.qcow2" 10M
    qio "$p-base.qcow2" qcow2 "write -P 0x41 0 10M"
    qcreate -f qcow2 -b "$p-base.qcow2" -F qcow2 "$p-mid.qcow2"
    qio "$p-mid.qcow2" qcow2 "write -P 0x42 1M 2M" "write -z 5M 1M" "write -c -P 0x43 7M 64k"
    qcreate -f qcow2 -b "$p-mid.qcow2" -F qcow2 "$p-top.qcow2" 12M
    qio "$p-top.qcow2" qcow2 "write -P 0x44 2M 2M" "write -z 8M 64k" "write -P 0x45 11M 100k" \
        "write -c -P 0x46 6M 64k" "write -P 0x47 4000 5000"
}
same_chain() {
    local label=$1 l
    for l in base mid top; do
        qcheck "i-$l.qcow2" "$label: $l"
        [[ $(vsize "q-$l.qcow2") == "$(vsize "i-$l.qcow2")" ]] || fail "$label: $l has another size than qemu's"
        qemu-img compare -q "q-$l.qcow2" "i-$l.qcow2" || fail "$label: $l differs from qemu's"
    done
    diff <(qemu-img map --output=json "q-top.qcow2" | sed 's/"offset": [0-9]*//') \
         <(qemu-img map --output=json "i-top.qcow2" | sed 's/"offset": [0-9]*//') >/dev/null ||
        fail "$label: the top maps differently from qemu's"
}
for args in "" "-r 8M" "-d" "-b q-base.qcow2" "-b q-mid.qcow2"; do
    rm -f ./*.qcow2
    make_chain q
    make_chain i
    qemu-img convert -O raw q-top.qcow2 before.raw
    # shellcheck disable=SC2086
    qemu-img commit -q $args q-top.qcow2 || fail "qemu-img commit $args"
    # shellcheck disable=SC2086
    "$IMGFS" commit -q ${args//q-/i-} i-top.qcow2 || fail "imgfs commit ${args//q-/i-}"
    same_chain "commit ${args:-(plain)}"
    # whatever was committed where, the disk the top shows is unchanged
    qemu-img compare -q -F raw i-top.qcow2 before.raw || fail "commit $args: the top no longer reads as before"
    echo "   commit ${args:-(plain)}: base, mid and top agree with qemu-img"
done

echo "== commit refusals and progress"
qcreate -f qcow2 lone.qcow2 1M
if "$IMGFS" commit lone.qcow2 2>err; then fail "committed an image without a backing file"; fi
grep -q "lone.qcow2" err || fail "the error does not name the image: $(cat err)"
if "$IMGFS" commit -b nosuch.qcow2 i-top.qcow2 2>err; then fail "committed into a file not in the chain"; fi
out=$("$IMGFS" commit -p -d i-top.qcow2) || fail "imgfs commit -p"
grep -q "100.00/100%" <<<"$out" || fail "commit -p printed no progress: $out"
grep -q "Image committed." <<<"$out" || fail "commit printed: $out"
# -r: about 2.2 MiB to copy at 2 MiB/s takes a second
t0=$(date +%s%N)
"$IMGFS" commit -q -d -r 2M i-top.qcow2 || fail "imgfs commit -r 2M"
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
(( ms >= 700 )) || fail "commit -r 2M of ~2.2 MiB took $ms ms: the rate limit was not applied"
echo "   commit -r 2M: $ms ms"
if "$IMGFS" commit -r 0 i-top.qcow2 2>err; then fail "commit -r 0 was accepted"; fi
echo "   refusals name the file; -p shows progress"
echo "PASS: resize_commit"
