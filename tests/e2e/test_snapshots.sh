#!/usr/bin/env bash
# Internal snapshots as files: snapshots/<name>.raw reads exactly like
# `qemu-img convert -l`, at the snapshot's own size (one taken before a
# resize), through the backing chain; naming of awkward names; read-only;
# `imgfs snapshot -l` and `imgfs info` agree with qemu-img.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img qemu-io cmp
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
M=$((1024 * 1024))
log "an image with snapshots of different data, sizes and names"
(
    cd "$SRC"
    qemu-img create -q -f qcow2 base.qcow2 8M
    qemu-io -f qcow2 -c "write -P 0x10 0 8M" base.qcow2 >/dev/null
    qemu-img create -q -f qcow2 -o cluster_size=4096 -b base.qcow2 -F qcow2 vm.qcow2 4M
    qemu-io -f qcow2 -c "write -P 0x21 100k 300k" vm.qcow2 >/dev/null
    qemu-img snapshot -c small vm.qcow2                 # 4M, before the resize
    qemu-img resize -q vm.qcow2 6M
    qemu-io -f qcow2 -c "write -P 0x32 5M 64k" -c "write -z 1M 64k" vm.qcow2 >/dev/null
    qemu-img snapshot -c "with/slash" vm.qcow2
    qemu-io -f qcow2 -c "write -P 0x43 0 12345" vm.qcow2 >/dev/null
    qemu-img snapshot -c twice vm.qcow2
    qemu-io -f qcow2 -c "write -P 0x54 2M 1M" vm.qcow2 >/dev/null
    qemu-img snapshot -c twice vm.qcow2
    qemu-img snapshot -c "" vm.qcow2 2>/dev/null || true  # qemu may refuse an empty name
    qemu-io -f qcow2 -c "write -P 0x65 3M 5000" vm.qcow2 >/dev/null  # current state differs from all
    # holes in a snapshot: its map is the image's map when it was taken
    qemu-img create -q -f qcow2 -o cluster_size=4096 holes.qcow2 4M
    qemu-io -f qcow2 -c "write -P 0x71 100k 300k" -c "write -P 0x72 2M 4k" -c "write -z 3M 64k" holes.qcow2 >/dev/null
    qemu-img map --output=json holes.qcow2 > "$T/holes.map.json"
    qemu-img snapshot -c h holes.qcow2
    qemu-io -f qcow2 -c "write -P 0x73 1M 1M" -c "write -z 100k 8k" holes.qcow2 >/dev/null
)

log "imgfs snapshot -l and info agree with qemu-img"
diff <(qemu-img snapshot -l "$SRC/vm.qcow2") <("$IMGFS" snapshot -l "$SRC/vm.qcow2") || fail "snapshot -l differs"
"$PY" - "$SRC/vm.qcow2" "$IMGFS" <<'PYEOF' || fail "info --output=json snapshots differ"
import json, subprocess, sys
img, imgfs = sys.argv[1], sys.argv[2]
q = json.loads(subprocess.check_output(["qemu-img", "info", "--output=json", img]))
i = json.loads(subprocess.check_output([imgfs, "info", "--output=json", img]))
if q.get("snapshots") != i.get("snapshots"):
    print("qemu:", q.get("snapshots"), "\nimgfs:", i.get("snapshots"))
    sys.exit(1)
print("   %d snapshots listed identically" % len(q["snapshots"]))
PYEOF
[[ -z $("$IMGFS" snapshot -l "$SRC/base.qcow2") ]] || fail "an image without snapshots must list nothing"

log "snapshot views"
mount_imgfs "$SRC" "$MNT"
ls "$MNT/vm.qcow2/snapshots" | sed 's/^/   /'
# id -> expected file name, per README's rule
mapfile -t rows < <(qemu-img info -U --output=json "$SRC/vm.qcow2" |
    "$PY" -c 'import json,sys; [print(s["id"], s["name"]) for s in json.load(sys.stdin)["snapshots"]]')
declare -A count
for r in "${rows[@]}"; do read -r id name <<< "$r"; count[x$name]=$(( ${count[x$name]:-0} + 1 )); done
n=0
for r in "${rows[@]}"; do
    read -r id name <<< "$r"
    if [[ ${count[x$name]} -eq 1 && $name != */* && -n $name ]]; then f="$name.raw"; else f="$id-${name//\//_}.raw"; fi
    view=$MNT/vm.qcow2/snapshots/$f
    [[ -f $view ]] || fail "missing snapshot view $f"
    qemu-img convert -U -l "snapshot.id=$id" -O raw "$SRC/vm.qcow2" "$T/snap.raw"
    # qemu-img 7.2 converts a snapshot at the image's current size; the view
    # has the snapshot's own size (checked for 'small' below): compare that.
    vs=$(stat -c %s "$view")
    (( vs <= $(stat -c %s "$T/snap.raw") )) || fail "snapshot view $f is larger than qemu's output"
    truncate -s "$vs" "$T/snap.raw"
    assert_same "$view" "$T/snap.raw" "snapshots/$f"
    if printf x | dd of="$view" conv=notrunc status=none 2>/dev/null; then fail "snapshot view $f is writable"; fi
    n=$((n + 1))
done
[[ $n -ge 4 ]] || fail "expected at least 4 snapshots, saw $n"
[[ $(stat -c %s "$MNT/vm.qcow2/snapshots/small.raw") == $((4 * M)) ]] || fail "snapshot before resize has the wrong size"
to_raw "$SRC/vm.qcow2" "$T/cur.raw"
assert_same "$MNT/vm.qcow2/disk.raw" "$T/cur.raw" "disk.raw (current state)"
seek_map_is "$MNT/holes.qcow2/snapshots/h.raw" "$T/holes.map.json" || fail "SEEK_DATA/SEEK_HOLE on a snapshot view"
echo "   snapshots/h.raw: SEEK_DATA/SEEK_HOLE give the map of the image when the snapshot was taken"
[[ ! -e $MNT/base.qcow2/snapshots/x ]] && [[ -d $MNT/base.qcow2/snapshots ]] || fail "base.qcow2/snapshots/ should exist and be empty"

log "writing an image with snapshots leaves the snapshots as they were"
qsums() { local r id name; for r in "${rows[@]}"; do
    read -r id name <<< "$r"
    qemu-img convert -U -l "snapshot.id=$id" -O raw "$SRC/vm.qcow2" "$T/q.raw"
    echo "$id $(sha256sum < "$T/q.raw" | cut -d' ' -f1)"
done; }
qsums_before=$(qsums)
sums_before=$(cd "$MNT/vm.qcow2/snapshots" && sha256sum -- * | sort)
head -c 3000000 /dev/urandom > "$T/w.bin"
dd if="$T/w.bin" of="$MNT/vm.qcow2/disk.raw" bs=64k seek=7 conv=notrunc,fsync status=none || fail "write to disk.raw failed"
dd if="$T/w.bin" of="$T/cur.raw" bs=64k seek=7 conv=notrunc status=none
assert_same "$MNT/vm.qcow2/disk.raw" "$T/cur.raw" "disk.raw after the write"
[[ $(cd "$MNT/vm.qcow2/snapshots" && sha256sum -- * | sort) == "$sums_before" ]] || fail "a snapshot view changed after writing disk.raw"
umount_imgfs "$MNT"
check_clean "$SRC/vm.qcow2"
qemu-img compare -q -f raw -F qcow2 "$T/cur.raw" "$SRC/vm.qcow2" || fail "image differs from what was written"
[[ $(qsums) == "$qsums_before" ]] || fail "qemu-img convert -l sees a snapshot changed by the write"
echo "   snapshots unchanged (through the mount and for qemu), image clean"

log "a snapshot name too long for a file name: a stable shortened name, the listing whole"
mkdir -p "$T/long" "$T/lm"
qemu-img create -q -f qcow2 "$T/long/l.qcow2" 1M
long=$(head -c 60000 /dev/zero | tr '\0' n)
for i in $(seq 1 40); do
    qemu-io -f qcow2 -c "write -P $i 0 4k" "$T/long/l.qcow2" > /dev/null
    if (( i == 20 )); then qemu-img snapshot -c "$long" "$T/long/l.qcow2"; else qemu-img snapshot -c "s$i" "$T/long/l.qcow2"; fi
done
mount_imgfs "$T/long" "$T/lm" -r
names=$(ls "$T/lm/l.qcow2/snapshots")
[[ $(wc -l <<<"$names") == 40 ]] || fail "snapshots/ lists $(wc -l <<<"$names") of 40 views"
short=$(grep -v '^s[0-9]*\.raw$' <<<"$names")
[[ $short == 20-nnn*~*.raw && ${#short} -le 255 ]] || fail "the long name is shown as '${short:0:80}...' (${#short} bytes)"
[[ $(head -c 1 "$T/lm/l.qcow2/snapshots/$short" | od -An -tu1 | tr -d ' ') == 20 ]] || fail "$short reads the wrong snapshot"
[[ $(head -c 1 "$T/lm/l.qcow2/snapshots/s21.raw" | od -An -tu1 | tr -d ' ') == 21 ]] || fail "s21.raw reads wrong"
umount_imgfs "$T/lm"
mount_imgfs "$T/long" "$T/lm" -r
[[ -f $T/lm/l.qcow2/snapshots/$short ]] || fail "the shortened name changed from one mount to the next"
umount_imgfs "$T/lm"
echo "   40 views listed; the 60,000-character name shown as ${short:0:12}...${short: -22} (${#short} bytes), the same at the next mount"

log "the corpus image made by qemu: snapshot hashes from SOURCES.md"
CORP=$IMGFS_CORPUS/qcow2/generated/v2-compressed-snapshots.qcow2
if [[ -f $CORP ]]; then
    mkdir -p "$T/c" "$T/cm"
    cp "$CORP" "$T/c/"
    mount_imgfs "$T/c" "$T/cm" -r
    for pair in "snap1-original 4c4d63700d2334ea286d4bde5aa698ae2cc10b8b8dd864d206d9b947e16bcf61" \
                "snap2-modified 3e8c951655a99da19ba421fb0e6d34536640cbe0398f3c21446f0775a13643a0"; do
        read -r name want <<< "$pair"
        got=$(sha256sum < "$T/cm/v2-compressed-snapshots.qcow2/snapshots/$name.raw" | cut -d' ' -f1)
        [[ $got == "$want" ]] || fail "corpus snapshot $name: sha256 $got, expected $want"
        echo "   corpus snapshot $name: sha256 as expected"
    done
    umount_imgfs "$T/cm"
else
    echo "   (corpus not found at $IMGFS_CORPUS: corpus part not run)"
fi
check_clean "$SRC/vm.qcow2"
echo "PASS: snapshots"
