#!/usr/bin/env bash
# imgfs check against qemu-img check: the same report (messages, summary,
# JSON) and exit code on clean, leaking and corrupted images (corrupted on
# purpose by patching bytes), and repairs that qemu-img check then calls
# clean without losing reachable data (an L2 entry past the end of the
# file, which qemu-img 7.2 cannot repair, included). An image left dirty by lazy
# refcounts is repaired at a read-write open.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir

same_report() { # LABEL IMG [ARGS...]: imgfs check == qemu-img check, text and JSON
    local label=$1 img=$2 a b
    shift 2
    for out in human json; do
        a=$(cd "$(dirname "$img")" && "$IMGFS" check --output=$out "$@" "$(basename "$img")" 2>&1; echo "exit $?")
        b=$(cd "$(dirname "$img")" && qemu-img check --output=$out "$@" "$(basename "$img")" 2>&1; echo "exit $?")
        [[ $a == "$b" ]] || { diff <(echo "$b") <(echo "$a") >&2 || true; fail "$label: imgfs check --output=$out differs from qemu-img check"; }
    done
    echo "   $label: same report as qemu-img ($(tail -1 <<< "$a"))"
}

# patch IMG WHAT...: damage an image on purpose (python; offsets from the header)
patch() {
    python3 - "$@" <<'PYEOF'
import struct, sys
path, what = sys.argv[1], sys.argv[2]
f = open(path, "r+b")
d = f.read()
cb = struct.unpack(">I", d[20:24])[0]; cs = 1 << cb
l1_off = struct.unpack(">Q", d[40:48])[0]
rt_off = struct.unpack(">Q", d[48:56])[0]
rb_off = struct.unpack(">Q", d[rt_off:rt_off + 8])[0]
l2_off = struct.unpack(">Q", d[l1_off:l1_off + 8])[0] & 0x00fffffffffffe00
def l2e(i): return struct.unpack(">Q", d[l2_off + 8 * i:l2_off + 8 * i + 8])[0]
def set_rc(cluster, v):
    f.seek(rb_off + 2 * cluster); f.write(struct.pack(">H", v))
if what == "leak":            # a cluster counted that nothing references
    f.seek(len(d)); f.write(b"\0" * cs)
    set_rc(len(d) // cs, 1)
elif what == "too-high":      # a referenced cluster counted twice (COPIED now wrong too)
    c = (l2e(0) & 0x00fffffffffffe00) >> cb
    rc = struct.unpack(">H", d[rb_off + 2 * c:rb_off + 2 * c + 2])[0]
    set_rc(c, rc + 1)
elif what == "too-low":       # a referenced cluster marked free
    set_rc((l2e(1) & 0x00fffffffffffe00) >> cb, 0)
elif what == "past-end":      # guest cluster 1 points 64 MiB into a file far shorter
    f.seek(l2_off + 8); f.write(struct.pack(">Q", (l2e(1) & ~0x00fffffffffffe00) | (64 << 20)))
elif what == "compressed-past-end":  # compressed guest cluster 0's bytes 64 GiB on
    x = 62 - (cb - 8)
    e = l2e(0); assert e >> 62 & 1, "cluster 0 is not compressed"
    f.seek(l2_off); f.write(struct.pack(">Q", (e & ~((1 << x) - 1)) | (64 << 30)))
elif what == "reftable-reserved":  # a reserved bit in the refcount table's first entry
    f.seek(rt_off); f.write(struct.pack(">Q", rb_off | 1))
elif what == "refblock-outside":   # the first refcount block 1 GiB past the end of the file
    f.seek(rt_off); f.write(struct.pack(">Q", 1 << 30))
elif what == "refblock-overlap":   # the first refcount block is guest cluster 0's data
    f.seek(rt_off); f.write(struct.pack(">Q", l2e(0) & 0x00fffffffffffe00))
elif what == "overlap":       # guest cluster 2 points at guest cluster 0's host cluster
    f.seek(l2_off + 16); f.write(struct.pack(">Q", l2e(0)))
PYEOF
}

qemu-img create -q -f qcow2 -o cluster_size=4096 "$T/a.qcow2" 4M
qio "$T/a.qcow2" qcow2 "write -P 0x11 0 64k" "write -P 0x22 1M 100k"
qemu-img snapshot -c s1 "$T/a.qcow2"
qio "$T/a.qcow2" qcow2 "write -P 0x33 8k 8k"
same_report "clean image with a snapshot" "$T/a.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=512,refcount_bits=64 "$T/b.qcow2" 2M
qio "$T/b.qcow2" qcow2 "write -P 0x44 1000 300k"
same_report "512-byte clusters, 64-bit refcounts" "$T/b.qcow2"
qemu-img convert -c -O qcow2 "$T/a.qcow2" "$T/z.qcow2"
same_report "compressed clusters" "$T/z.qcow2"
# A check that cannot run exits 1, as qemu-img's: a missing file, and an
# image with an incompatible feature bit nobody knows (bit 32).
for what in missing unknown-bit; do
    f=$T/$what.qcow2
    if [[ $what == unknown-bit ]]; then
        qemu-img create -q -f qcow2 "$f" 1M
        printf '\x01' | dd of="$f" bs=1 seek=$((72 + 3)) conv=notrunc status=none
    fi
    rc=0; out=$("$IMGFS" check "$f" 2>&1) || rc=$?
    qrc=0; qemu-img check "$f" > /dev/null 2>&1 || qrc=$?
    [[ $rc == 1 && $qrc == 1 ]] || fail "check of a $what image: imgfs exit $rc ($out), qemu-img $qrc, expected 1"
done
qemu-img create -q -f raw "$T/raw.img" 1M
rc=0; out=$("$IMGFS" check -f raw "$T/raw.img" 2>&1) || rc=$?
[[ $rc == 63 ]] || fail "checking a raw image: exit $rc ($out), expected 63 as qemu-img"

CORP=$IMGFS_CORPUS/qcow2/generated/v3-dirty-lazyrefcounts-zeroclusters.qcow2
if [[ -f $CORP ]]; then
    cp "$CORP" "$T/dirty.qcow2"; chmod 644 "$T/dirty.qcow2"
    same_report "dirty image with stale lazy refcounts (corpus)" "$T/dirty.qcow2"
    qemu-img convert -U -O raw "$T/dirty.qcow2" "$T/dirty.raw"
    "$IMGFS" check -r all "$T/dirty.qcow2" > /dev/null 2>&1 || fail "check -r all on the dirty image"
    qcheck "$T/dirty.qcow2" "dirty image after imgfs check -r all"
    qemu-img compare -q -f raw "$T/dirty.raw" "$T/dirty.qcow2" || fail "repair of the dirty image changed its content"
    qemu-img info "$T/dirty.qcow2" | grep -q "dirty" && qemu-img info --output=json "$T/dirty.qcow2" | grep -q '"dirty-flag": true' \
        && fail "dirty flag still set after repair"
    # a read-write open repairs it by itself (as qemu does)
    cp "$CORP" "$T/dirty2.qcow2"; chmod 644 "$T/dirty2.qcow2"
    "$IMGWRITE" "$T/dirty2.qcow2" 0 0x5e 4096 || fail "imgwrite on a dirty image"
    dd if=/dev/zero bs=4096 count=1 status=none | tr '\0' '\136' | dd of="$T/dirty.raw" conv=notrunc status=none
    qcheck "$T/dirty2.qcow2" "dirty image after a read-write open and a write"
    qemu-img compare -q -f raw "$T/dirty.raw" "$T/dirty2.qcow2" || fail "dirty image content after open-time repair"
    echo "   dirty image: repaired by check -r all and by a read-write open"
else
    echo "   (corpus not found at $IMGFS_CORPUS: dirty-image cases not run)"
fi

for damage in leak too-high too-low overlap past-end; do
    img=$T/$damage.qcow2
    qemu-img create -q -f qcow2 "$img" 4M
    qio "$img" qcow2 "write -P 0x61 0 64k" "write -P 0x62 64k 64k" "write -P 0x63 128k 64k" "write -P 0x64 1M 64k"
    patch "$img" "$damage"
    same_report "damage '$damage'" "$img"
    qemu-img convert -U -O raw "$img" "$T/before.raw"
    mode=all; [[ $damage == leak || $damage == too-high ]] && mode=leaks
    "$IMGFS" check -r "$mode" "$img" > "$T/repair.out" 2>&1 || { cat "$T/repair.out" >&2; fail "imgfs check -r $mode failed on '$damage'"; }
    qcheck "$img" "after imgfs check -r $mode ('$damage')"
    qemu-img compare -q -f raw "$T/before.raw" "$img" || fail "repair of '$damage' changed reachable data"
    echo "   damage '$damage': imgfs check -r $mode leaves an image qemu-img calls clean, data kept"
done
# A refcount table that cannot be trusted is rebuilt from the references,
# as qemu-img check -r all does ("Rebuilding refcount structure").
for damage in reftable-reserved refblock-outside refblock-overlap; do
    img=$T/$damage.qcow2
    qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 4M
    qio "$img" qcow2 "write -P 0x71 0 64k" "write -P 0x72 1M 100k"
    qemu-img snapshot -c s1 "$img"
    qio "$img" qcow2 "write -P 0x73 8k 8k"
    qemu-img convert -U -O raw "$img" "$T/before.raw"
    qemu-img convert -U -l s1 -O raw "$img" "$T/before.s1.raw"
    patch "$img" "$damage"
    if [[ $damage == refblock-outside ]]; then
        size=$(stat -c %s "$img")
        "$IMGWRITE" "$img" 3145728 0x75 4096 2> "$T/w.err" && fail "a write through a refcount block past the end succeeded"
        grep -q "past the end of the file" "$T/w.err" || fail "write refusal does not say why: $(cat "$T/w.err")"
        [[ $(stat -c %s "$img") == "$size" ]] || fail "the refused write grew the file to $(stat -c %s "$img")"
    fi
    rc=0; "$IMGFS" check "$img" > "$T/check.out" 2>&1 || rc=$?
    qrc=0; qemu-img check "$img" > /dev/null 2>&1 || qrc=$?
    [[ $rc == "$qrc" && $rc == 2 ]] || fail "check of '$damage': imgfs exit $rc, qemu-img $qrc, expected 2: $(cat "$T/check.out")"
    "$IMGFS" check -r all "$img" > "$T/repair.out" 2>&1 || { cat "$T/repair.out" >&2; fail "imgfs check -r all failed on '$damage'"; }
    grep -q "Rebuilding refcount structure" "$T/repair.out" || fail "'$damage' repaired without a rebuild: $(cat "$T/repair.out")"
    qcheck "$img" "after imgfs check -r all ('$damage')"
    qemu-img compare -q -f raw "$T/before.raw" "$img" || fail "repair of '$damage' changed the disk"
    qemu-img convert -l s1 -O raw "$img" "$T/after.s1.raw"
    cmp -s "$T/before.s1.raw" "$T/after.s1.raw" || fail "repair of '$damage' changed the snapshot"
    "$IMGWRITE" "$img" 2097152 0x74 65536 || fail "a write after the rebuild of '$damage'"
    qcheck "$img" "after a write to the rebuilt '$damage'"
    echo "   damage '$damage': refcount structure rebuilt, disk and snapshot kept, writable"
done

# An L1 entry naming an L2 table past the end of the file: reads of its
# range fail (damage); -r all clears the entry, so they read as zeros.
img=$T/l1-past-end.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4096 "$img" 4M
qio "$img" qcow2 "write -P 0x76 0 64k" "write -P 0x77 3M 64k"
qemu-img convert -U -O raw "$img" "$T/before.raw"
python3 - "$img" <<'PYEOF'
import struct, sys
f = open(sys.argv[1], "r+b"); d = f.read()
l1_off = struct.unpack(">Q", d[40:48])[0]
f.seek(l1_off + 8 * 1)   # guest 2-4 MiB (2 MiB per L2 table at 4 KiB clusters)
f.write(struct.pack(">Q", (1 << 63) | (1 << 40)))
PYEOF
"$IMGCAT" "$img" > /dev/null 2>&1 && fail "reading through an L2 table past the end succeeded"
"$IMGFS" check -r all "$img" > "$T/repair.out" 2>&1 || { cat "$T/repair.out" >&2; fail "check -r all on an L1 entry past the end"; }
grep -q "Repairing L1 entry 1" "$T/repair.out" || fail "L1 repair not reported: $(cat "$T/repair.out")"
qcheck "$img" "after repairing an L1 entry past the end"
dd if=/dev/zero of="$T/before.raw" bs=64k seek=48 count=1 conv=notrunc status=none
qemu-img compare -q -f raw "$T/before.raw" "$img" || fail "after the L1 repair the range does not read as zeros, or more changed"
echo "   L1 entry past the end: cleared by -r all, its range reads as zeros"

# A refcount 2 GiB past the end of the file (in the block that holds the
# end): allocating after it would grow the file that far, so a write is
# refused as damage; it is a leak, and -r leaks clears it.
img=$T/far-refcount.qcow2
qemu-img create -q -f qcow2 "$img" 1G
qio "$img" qcow2 "write -P 0x78 0 1M"
python3 - "$img" <<'PYEOF'
import struct, sys
f = open(sys.argv[1], "r+b"); d = f.read()
rt = struct.unpack(">Q", d[48:56])[0]; rb = struct.unpack(">Q", d[rt:rt + 8])[0]
f.seek(rb + 2 * 32000); f.write(struct.pack(">H", 1))   # cluster 32000 of 64 KiB: 2 GiB in
PYEOF
size=$(stat -c %s "$img")
"$IMGWRITE" "$img" 2097152 0x79 4096 2> "$T/w.err" && fail "a write allocating after a refcount 2 GiB past the end succeeded"
grep -q "far past the end of the file" "$T/w.err" || fail "refusal does not say why: $(cat "$T/w.err")"
[[ $(stat -c %s "$img") == "$size" ]] || fail "the refused write grew the file"
"$IMGFS" check -r leaks "$img" > "$T/repair.out" 2>&1 || { cat "$T/repair.out" >&2; fail "check -r leaks"; }
grep -q "Repairing cluster 32000 refcount=1 reference=0" "$T/repair.out" || fail "the far refcount was not repaired: $(cat "$T/repair.out")"
"$IMGWRITE" "$img" 2097152 0x79 4096 || fail "a write after the repair"
qcheck "$img" "after repairing a far refcount and writing"
(( $(stat -c %s "$img") < 64 << 20 )) || fail "the file grew to $(stat -c %s "$img")"
echo "   refcount 2 GiB past the end: writes refused, check -r leaks clears it, writes work"

# A snapshot of an image whose references run past the end of the file is
# refused, naming the cause: counting them would grow the file toward them
# (qemu-img snapshot -c writes refcount blocks out there until EFBIG).
head -c 1M /dev/zero | tr '\0' 'z' > "$T/c.raw"
qemu-img convert -c -f raw -O qcow2 -o cluster_size=4096 "$T/c.raw" "$T/cpe.qcow2"
for damage in compressed-past-end past-end; do
    img=$T/snap-$damage.qcow2
    if [[ $damage == past-end ]]; then
        qemu-img create -q -f qcow2 "$img" 4M
        qio "$img" qcow2 "write -P 0x61 0 128k"
    else
        cp "$T/cpe.qcow2" "$img"
    fi
    patch "$img" "$damage"
    size=$(stat -c %s "$img")
    rc=0; out=$("$IMGFS" snapshot -c s "$img" 2>&1) || rc=$?
    [[ $rc == 1 ]] || fail "snapshot -c of an image with '$damage' exit $rc: $out"
    grep -q "past the end of the file" <<<"$out" || fail "snapshot -c refusal does not say why: $out"
    (( $(stat -c %s "$img") <= size + 65536 )) || fail "snapshot -c grew the file from $size to $(stat -c %s "$img")"
    echo "   damage '$damage': snapshot -c refused ($(tail -1 <<<"$out" | sed 's/.*: //'))"
done
# -r all gives the compressed cluster that cannot be read a zeroed cluster:
# its 4 KiB read as zeros instead of failing; the rest is as it was.
img=$T/snap-compressed-past-end.qcow2
"$IMGCAT" "$img" > /dev/null 2>&1 && fail "reading a compressed cluster past the end succeeded"
"$IMGFS" check -r all "$img" > "$T/repair.out" 2>&1 || { cat "$T/repair.out" >&2; fail "check -r all on a compressed cluster past the end"; }
grep -q "Repairing compressed cluster at offset 0x1000000000" "$T/repair.out" || fail "not repaired: $(cat "$T/repair.out")"
qcheck "$img" "after repairing a compressed cluster past the end"
dd if=/dev/zero of="$T/c.raw" bs=4096 count=1 conv=notrunc status=none
qemu-img compare -q -f raw "$T/c.raw" "$img" || fail "after the repair: not zeros there, or more changed"
echo "   compressed cluster past the end: -r all makes it a zeroed cluster, the rest unchanged"

# A backing chain that comes back to its top cannot be checked (qemu-img
# 7.2 itself spins on it, growing without end, so it is not run here).
(cd "$T" && qemu-img create -q -f qcow2 -u -b loop-b.qcow2 -F qcow2 loop-a.qcow2 1M &&
    qemu-img create -q -f qcow2 -u -b loop-a.qcow2 -F qcow2 loop-b.qcow2 1M)
rc=0; out=$(cd "$T" && "$IMGFS" check loop-a.qcow2 2>&1) || rc=$?
[[ $rc == 1 ]] || fail "check of a looping chain: exit $rc: $out"
[[ $out == "imgfs: loop-a.qcow2: Backing file 'loop-a.qcow2' creates an infinite loop." ]] ||
    fail "check of a looping chain says: $out"
echo "   a looping backing chain: check exits 1 naming the loop"
echo "PASS: check"
