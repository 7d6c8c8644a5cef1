#!/usr/bin/env bash
# lseek(SEEK_DATA/SEEK_HOLE) on disk.raw agrees with `qemu-img map` (hole =
# data:false), for a qcow2 with holes, zero clusters and a compressed cluster,
# an overlay (incl. zero clusters masking backing data) and a sparse raw file.
# Sparse-aware tools then work: `cp --sparse=always` and `tar -S` keep the
# content and produce sparse results.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io cmp cp tar du
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt EXP=$T/exp
mkdir -p "$SRC" "$MNT" "$EXP"
M=$((1024 * 1024)) K=1024
SIZE=$((32 * M))

log "creating images"
qio() { qemu-io -f qcow2 "${@:2}" "$1" >/dev/null || fail "qemu-io on $1 failed"; }
(
    cd "$SRC"
    qemu-img create -q -f qcow2 -o cluster_size=65536 holes.qcow2 $SIZE
    qio holes.qcow2 \
        -c "write -P 0x11 $((1 * M + 1000)) 100000" \
        -c "write -P 0x22 $((5 * M - 10)) 20" \
        -c "write -P 0x33 $((8 * M)) $((1 * M))" \
        -c "write -z $((8 * M + 64 * K)) $((512 * K))" \
        -c "write -z $((20 * M)) $((1 * M))" \
        -c "write -P 0x00 $((12 * M)) $((64 * K))" \
        -c "write -c -P 0xab $((16 * M)) $((64 * K))" \
        -c "write -P 0x44 $((SIZE - 100)) 100"
    qemu-img create -q -f qcow2 -o cluster_size=65536 -b holes.qcow2 -F qcow2 overlay.qcow2
    qio overlay.qcow2 \
        -c "write -P 0x55 $((2 * M)) 10" \
        -c "write -z $((1 * M)) $((64 * K))" \
        -c "write -z $((8 * M + 640 * K)) $((128 * K))" \
        -c "write -P 0x66 $((30 * M + 5)) 70000"
    # raw: holes are those of the host file
    truncate -s $((8 * M)) sparse.img
    head -c 300000 /dev/urandom | dd of=sparse.img bs=64K seek=$((3 * M)) oflag=seek_bytes conv=notrunc status=none
    printf 'end' | dd of=sparse.img bs=1 seek=$((8 * M - 3)) conv=notrunc status=none
)
for img in holes.qcow2 overlay.qcow2 sparse.img; do
    to_raw "$SRC/$img" "$EXP/$img.raw"
    fmt=qcow2; [[ $img == *.img ]] && fmt=raw
    qemu-img map -f "$fmt" --output=json "$SRC/$img" > "$EXP/$img.map.json"
done

# data extents per qemu-img map: adjacent data:true entries merged
qemu_extents() {
    "$PY" - "$1" <<'EOF'
import json, sys
ext = []
for e in json.load(open(sys.argv[1])):
    if not e.get("data"):
        continue
    s, n = e["start"], e["length"]
    if ext and ext[-1][1] == s:
        ext[-1][1] = s + n
    else:
        ext.append([s, s + n])
for s, e in ext:
    print(s, e)
EOF
}

# data extents found by walking the file with SEEK_DATA/SEEK_HOLE; also
# checks the lseek semantics inside every extent and every hole
seek_extents() {
    "$PY" - "$1" <<'EOF'
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
def seek(off, whence):
    try:
        return os.lseek(fd, off, whence)
    except OSError as e:
        if e.errno == errno.ENXIO:
            return None
        raise
ext, pos = [], 0
while pos < size:
    d = seek(pos, os.SEEK_DATA)
    if d is None:
        break
    h = seek(d, os.SEEK_HOLE)
    if h is None or not (pos <= d < h <= size):
        sys.exit(f"bad lseek result: SEEK_DATA({pos})={d} SEEK_HOLE({d})={h} size={size}")
    ext.append((d, h))
    pos = h
def fail(msg):
    sys.exit("lseek semantics: " + msg)
if seek(size, os.SEEK_DATA) is not None: fail("SEEK_DATA at EOF did not give ENXIO")
if seek(size, os.SEEK_HOLE) is not None: fail("SEEK_HOLE at EOF did not give ENXIO")
if seek(size + 4096, os.SEEK_DATA) is not None: fail("SEEK_DATA past EOF did not give ENXIO")
prev_end = 0
for d, h in ext + [(None, None)]:
    # hole [prev_end, d) (or up to EOF)
    hole_end = size if d is None else d
    if hole_end > prev_end:
        mid = (prev_end + hole_end) // 2
        if seek(mid, os.SEEK_HOLE) != mid: fail(f"SEEK_HOLE({mid}) inside hole != {mid}")
        if seek(mid, os.SEEK_DATA) != d: fail(f"SEEK_DATA({mid}) inside hole != {d}")
    if d is None:
        break
    for p in (d, (d + h) // 2, h - 1):
        if seek(p, os.SEEK_DATA) != p: fail(f"SEEK_DATA({p}) inside data [{d},{h}) != {p}")
        if seek(p, os.SEEK_HOLE) != h: fail(f"SEEK_HOLE({p}) inside data [{d},{h}) != {h}")
    prev_end = h
for s, e in ext:
    print(s, e)
EOF
}

mount_imgfs "$SRC" "$MNT"

for img in holes.qcow2 overlay.qcow2 sparse.img; do
    log "$img: SEEK_DATA/SEEK_HOLE vs qemu-img map"
    f=$MNT/$img/disk.raw
    assert_size "$f" "$(img_vsize "$SRC/$img")" "$img/disk.raw"
    qemu_extents "$EXP/$img.map.json" > "$T/$img.want"
    seek_extents "$f" > "$T/$img.got" || fail "$img: lseek walk failed"
    [[ -s $T/$img.want ]] || fail "test setup: $img has no data extents"
    if ! diff -u "$T/$img.want" "$T/$img.got" > "$T/$img.diff"; then
        cat "$T/$img.diff"
        fail "$img: data extents from lseek differ from qemu-img map (- qemu, + imgfs)"
    fi
    echo "   $(wc -l < "$T/$img.got") data extents agree"
    assert_same "$f" "$EXP/$img.raw" "$img/disk.raw content"
done
# the zero clusters in the overlay hide data of the backing file: they must be
# holes in the overlay view although they are data in the base view
awk -v a=$((1 * M)) '$1 <= a && $2 > a { f = 1 } END { exit !f }' "$T/holes.qcow2.got" ||
    fail "test setup: base has no data at 1M"
awk -v a=$((1 * M)) '$1 <= a && $2 > a { f = 1 } END { exit f }' "$T/overlay.qcow2.got" ||
    fail "overlay: zero cluster at 1M over backing data is reported as data"

for img in holes.qcow2 overlay.qcow2; do
    f=$MNT/$img/disk.raw
    log "$img: cp --sparse=always"
    cp --sparse=always "$f" "$T/copy.raw"
    assert_same "$T/copy.raw" "$EXP/$img.raw" "cp copy of $img"
    used=$(($(stat -c '%b * %B' "$T/copy.raw")))
    echo "   copy: $used bytes allocated of $SIZE"
    ((used < SIZE / 4)) || fail "cp --sparse=always copy of $img is not sparse ($used bytes allocated)"
    rm -f "$T/copy.raw"

    log "$img: tar -S"
    tar -S -C "$MNT/$img" -cf "$T/a.tar" disk.raw
    tsz=$(stat -c %s "$T/a.tar")
    echo "   archive: $tsz bytes"
    ((tsz < SIZE / 4)) || fail "tar -S archive of $img is not sparse ($tsz bytes)"
    rm -rf "$T/x" && mkdir "$T/x"
    tar -S -C "$T/x" -xf "$T/a.tar"
    assert_same "$T/x/disk.raw" "$EXP/$img.raw" "tar round trip of $img"
    used=$(($(stat -c '%b * %B' "$T/x/disk.raw")))
    ((used < SIZE / 4)) || fail "tar -S extracted $img is not sparse ($used bytes allocated)"
    rm -rf "$T/x" "$T/a.tar"
done

umount_imgfs "$MNT"
echo "PASS: seek_holes"
