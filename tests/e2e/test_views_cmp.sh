#!/usr/bin/env bash
# Mounted tree layout and content of every view:
#  - one directory per image (qcow2 by magic whatever the name, raw by
#    extension), nothing for other files (notes.txt)
#  - disk.raw / layers/N-*.raw / info.json present; info.json is JSON and
#    agrees with qemu-img info --backing-chain
#  - every disk.raw and layer view is byte-identical to `qemu-img convert -O raw`
#    of the right image; st_size = virtual size; random unaligned preads agree
#  - the base image (backing file of overlay.qcow2) is read-only (EROFS),
#    layer views are read-only, and `mount -r` makes every disk.raw read-only
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io cmp mountpoint
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt EXP=$T/exp
mkdir -p "$SRC" "$MNT" "$EXP"
M=$((1024 * 1024))

log "creating images"
qio() { qemu-io -f qcow2 "${@:2}" "$1" >/dev/null || fail "qemu-io on $1 failed"; }
(
    cd "$SRC"
    qemu-img create -q -f qcow2 -o cluster_size=65536 base.qcow2 16M
    qio base.qcow2 -c "write -P 0x11 1000 5000" \
        -c "write -P 0x22 65000 70000" \
        -c "write -P 0x33 $((3 * M + 17)) 123457" \
        -c "write -P 0x44 $((16 * M - 300)) 300"
    # relative backing path: resolved next to the overlay
    qemu-img create -q -f qcow2 -o cluster_size=65536 -b base.qcow2 -F qcow2 overlay.qcow2
    qio overlay.qcow2 -c "write -P 0x55 66000 1000" \
        -c "write -P 0x66 $((10 * M + 3)) 200000" \
        -c "write -z $((3 * M)) 65536" \
        -c "write -P 0x77 $((16 * M - 1)) 1"
    # qcow2 detected by magic despite the extension, small clusters, old
    # compat, virtual size not a multiple of the cluster size
    qemu-img create -q -f qcow2 -o cluster_size=4096,compat=0.10 odd-name.dat $((3 * M + 512))
    qio odd-name.dat -c "write -P 0x88 4000 300" -c "write -P 0x99 $((3 * M + 100)) 412"
    # raw by extension, sparse, size a multiple of 512 but not of 4096
    truncate -s $((4 * M + 512)) data.img
    head -c 300000 /dev/urandom | dd of=data.img bs=64K seek=$((M + 7)) oflag=seek_bytes conv=notrunc status=none
    printf 'tail' | dd of=data.img bs=1 seek=$((4 * M + 508)) conv=notrunc status=none
    echo "this is not a disk image" > notes.txt
)
for img in base.qcow2 overlay.qcow2 odd-name.dat data.img; do
    to_raw "$SRC/$img" "$EXP/$img.raw"
done
cp --sparse=always "$SRC/data.img" "$T/data.img.orig"

mount_imgfs "$SRC" "$MNT"
mountpoint -q "$MNT" || fail "$MNT is not a mount point after mount"

log "checking the tree"
got=$(cd "$MNT" && ls -1A | sort | tr '\n' ' ')
want="base.qcow2 data.img odd-name.dat overlay.qcow2 "
[[ $got == "$want" ]] || fail "top level is '$got', expected '$want' (notes.txt must not appear)"
[[ ! -e $MNT/notes.txt ]] || fail "notes.txt is visible"

declare -A LAYERS=(
    [base.qcow2]="0-base.qcow2.raw "
    [overlay.qcow2]="0-overlay.qcow2.raw 1-base.qcow2.raw "
    [odd-name.dat]="0-odd-name.dat.raw "
    [data.img]="0-data.img.raw "
)
for img in "${!LAYERS[@]}"; do
    d=$MNT/$img
    [[ -d $d ]] || fail "$img is not a directory"
    [[ -f $d/disk.raw ]] || fail "$img/disk.raw missing or not a regular file"
    [[ -d $d/layers ]] || fail "$img/layers missing"
    [[ -f $d/info.json ]] || fail "$img/info.json missing"
    got=$(cd "$d" && ls -1A | sort | tr '\n' ' ')
    # qcow2 images also have snapshots/ (internal snapshots as files)
    want="ctl disk.raw info.json layers partitions "
    [[ $(head -c 4 "$SRC/$img" | od -An -tx1 | tr -d ' \n') == 514649fb ]] && want="ctl disk.raw info.json layers partitions snapshots "
    [[ $got == "$want" ]] || fail "$img/ contains '$got', expected '$want'"
    got=$(cd "$d/layers" && ls -1A | sort | tr '\n' ' ')
    [[ $got == "${LAYERS[$img]}" ]] || fail "$img/layers contains '$got', expected '${LAYERS[$img]}'"
done
echo "   tree OK"

log "checking info.json against qemu-img info --backing-chain"
for img in "${!LAYERS[@]}"; do
    qemu-img info -U --output=json --backing-chain "$SRC/$img" > "$T/qinfo.json"
    "$PY" - "$MNT/$img/info.json" "$T/qinfo.json" "$img" <<'EOF' || fail "info.json of $img"
import json, os, sys
path, ref_path, name = sys.argv[1:]
try:
    with open(path) as f:
        got = json.load(f)
except Exception as e:
    sys.exit(f"{name}/info.json is not valid JSON: {e}")
ref = json.load(open(ref_path))
if isinstance(got, dict):
    got = [got]
if not isinstance(got, list) or len(got) != len(ref):
    sys.exit(f"{name}/info.json: expected a backing chain of {len(ref)} entries, got {json.dumps(got)[:300]}")
for i, (g, r) in enumerate(zip(got, ref)):
    for k in ("virtual-size", "format", "cluster-size"):
        if k in r and g.get(k) != r[k]:
            sys.exit(f"{name}/info.json[{i}].{k} = {g.get(k)!r}, qemu-img says {r[k]!r}")
    if "backing-filename" in r:
        if os.path.basename(str(g.get("backing-filename", ""))) != os.path.basename(r["backing-filename"]):
            sys.exit(f"{name}/info.json[{i}].backing-filename = {g.get('backing-filename')!r}, "
                     f"qemu-img says {r['backing-filename']!r}")
    elif g.get("backing-filename"):
        sys.exit(f"{name}/info.json[{i}] has a backing-filename but the image has none")
EOF
done
for img in base.qcow2 overlay.qcow2 odd-name.dat data.img; do
    diff <("$PY" -m json.tool < "$MNT/$img/info.json") <("$IMGFS" info --output=json --backing-chain "$SRC/$img" | "$PY" -m json.tool) ||
        fail "$img/info.json differs from imgfs info --output=json --backing-chain"
done
echo "   info.json OK (as qemu-img says, and exactly what imgfs info prints)"

log "disk.raw takes mtime, mode and owner from the image file, st_blocks from its allocation"
chmod 640 "$SRC/data.img"; chown 4321:1234 "$SRC/data.img"; touch -d "2001-02-03 04:05:06" "$SRC/data.img"
sleep 1.2   # the attribute timeout
for img in base.qcow2 overlay.qcow2 data.img; do
    want=$(stat -c "%Y %u %g" "$SRC/$img") got=$(stat -c "%Y %u %g" "$MNT/$img/disk.raw")
    [[ $got == "$want" ]] || fail "$img/disk.raw: mtime uid gid '$got', the image file has '$want'"
    wm=$(( 0$(stat -c %a "$SRC/$img") )) gm=$(( 0$(stat -c %a "$MNT/$img/disk.raw") ))
    # read bits as the file's; write bits only where the mount may write
    (( (gm & 0444) == (wm & 0444) && (gm & ~wm & 0777) == 0 )) || fail "$img/disk.raw: mode $(stat -c %a "$MNT/$img/disk.raw"), file $(stat -c %a "$SRC/$img")"
    wb=$(stat -c %b "$SRC/$img") gb=$(stat -c %b "$MNT/$img/disk.raw")
    [[ $gb == "$wb" ]] || fail "$img/disk.raw: st_blocks $gb, the image file has $wb (du would lie)"
done
echo "   mtime, owner, mode and st_blocks follow the image files"

log "SEEK_DATA/SEEK_HOLE on the layer views"
for v in "overlay.qcow2/layers/0-overlay.qcow2.raw overlay.qcow2" "overlay.qcow2/layers/1-base.qcow2.raw base.qcow2"; do
    read -r view img <<< "$v"
    qemu-img map -U --output=json "$SRC/$img" > "$T/map.json"
    seek_map_is "$MNT/$view" "$T/map.json" || fail "$view: SEEK_DATA/SEEK_HOLE differ from qemu-img map of $img"
    echo "   $view: as qemu-img map $img"
done

log "checking st_size and content of every view"
for img in base.qcow2 overlay.qcow2 odd-name.dat data.img; do
    vs=$(img_vsize "$SRC/$img")
    assert_size "$MNT/$img/disk.raw" "$vs" "$img/disk.raw"
    assert_same "$MNT/$img/disk.raw" "$EXP/$img.raw" "$img/disk.raw"
done
assert_same "$MNT/data.img/disk.raw" "$T/data.img.orig" "data.img/disk.raw vs the raw file itself"
assert_same "$MNT/base.qcow2/layers/0-base.qcow2.raw" "$EXP/base.qcow2.raw" "base.qcow2/layers/0"
assert_same "$MNT/overlay.qcow2/layers/0-overlay.qcow2.raw" "$EXP/overlay.qcow2.raw" "overlay.qcow2/layers/0"
assert_same "$MNT/overlay.qcow2/layers/1-base.qcow2.raw" "$EXP/base.qcow2.raw" "overlay.qcow2/layers/1 (base)"
assert_same "$MNT/odd-name.dat/layers/0-odd-name.dat.raw" "$EXP/odd-name.dat.raw" "odd-name.dat/layers/0"
assert_same "$MNT/data.img/layers/0-data.img.raw" "$EXP/data.img.raw" "data.img/layers/0"
# sanity: the overlay really differs from its base (else the layer test proves little)
! cmp -s "$EXP/overlay.qcow2.raw" "$EXP/base.qcow2.raw" || fail "test setup: overlay equals base"

log "random unaligned preads"
"$PY" - "$MNT" "$EXP" <<'EOF' || fail "random preads differ"
import os, random, sys
mnt, exp = sys.argv[1:]
rnd = random.Random(1234)
for img in ("base.qcow2", "overlay.qcow2", "odd-name.dat", "data.img"):
    a = os.open(os.path.join(mnt, img, "disk.raw"), os.O_RDONLY)
    b = os.open(os.path.join(exp, img + ".raw"), os.O_RDONLY)
    size = os.fstat(b).st_size
    for _ in range(300):
        off = rnd.randrange(size)
        n = rnd.choice((1, 7, 511, 4097, 65537, 200001))
        x, y = os.pread(a, n, off), os.pread(b, n, off)
        if x != y:
            sys.exit(f"{img}: pread({n}, {off}) differs from qemu's raw (got {len(x)} bytes)")
    # reads at and past EOF
    if os.pread(a, 10, size) != b"" or os.pread(a, 10, size + 12345) != b"":
        sys.exit(f"{img}: read at/after EOF returned data")
    if os.pread(a, 100, size - 3) != os.pread(b, 100, size - 3):
        sys.exit(f"{img}: short read at EOF wrong")
    os.close(a); os.close(b)
EOF
echo "   random preads OK"

log "read-only views"
e=$(write_errno "$MNT/base.qcow2/disk.raw")
[[ $e == EROFS ]] || fail "writing base.qcow2/disk.raw (backing file of overlay.qcow2): got $e, expected EROFS"
echo "   base.qcow2/disk.raw: EROFS"
for v in overlay.qcow2/layers/0-overlay.qcow2.raw overlay.qcow2/layers/1-base.qcow2.raw data.img/layers/0-data.img.raw; do
    e=$(write_errno "$MNT/$v")
    case $e in EROFS | EACCES | EPERM) echo "   $v: $e" ;; *) fail "writing layer view $v: got $e, expected an error" ;; esac
done
# writable views can be opened for writing (no data written)
"$PY" -c 'import os,sys; [os.close(os.open(p, os.O_RDWR)) for p in sys.argv[1:]]' \
    "$MNT/overlay.qcow2/disk.raw" "$MNT/data.img/disk.raw" "$MNT/odd-name.dat/disk.raw" ||
    fail "cannot open a writable disk.raw O_RDWR"
umount_imgfs "$MNT"
! mountpoint -q "$MNT" || fail "still mounted after imgfs umount"
to_raw "$SRC/base.qcow2" "$T/base.after.raw"
assert_same "$T/base.after.raw" "$EXP/base.qcow2.raw" "base.qcow2 unchanged after write attempts"
check_clean "$SRC/base.qcow2"
check_clean "$SRC/overlay.qcow2"

log "mount -r: every disk.raw read-only, content still right"
mount_imgfs "$SRC" "$MNT" -r
for img in overlay.qcow2 data.img odd-name.dat; do
    e=$(write_errno "$MNT/$img/disk.raw")
    [[ $e == EROFS ]] || fail "mount -r: writing $img/disk.raw: got $e, expected EROFS"
done
assert_same "$MNT/overlay.qcow2/disk.raw" "$EXP/overlay.qcow2.raw" "mount -r: overlay.qcow2/disk.raw"
umount_imgfs "$MNT"
cmp -s "$SRC/data.img" "$T/data.img.orig" || fail "data.img changed by a read-only mount"

echo "PASS: views"
