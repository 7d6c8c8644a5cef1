#!/usr/bin/env bash
# Control through the mount with only a shell: user.imgfs.* attributes,
# the ctl file, truncate and fallocate. Each operation by attribute and by
# ctl, checked through the mount (sizes, snapshots/, SEEK_HOLE, content
# read through a handle opened before the change) and by qemu-img after
# unmounting (info, snapshot -l, check, compare).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io getfattr setfattr fallocate truncate cmp
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
M=$((1024 * 1024))

# wait_idle CTL: until the background command of CTL has ended
wait_idle() {
    local i
    for i in $(seq 1 300); do
        grep -q "^current: idle" "$1" && return 0
        sleep 0.1
    done
    fail "$1 still busy after 30 s: $(cat "$1")"
}
# xerr CMD...: run CMD, print OK or the errno name it failed with
errno_of() {
    "$PY" - "$@" <<'PY'
import errno, os, sys
op, path = sys.argv[1], sys.argv[2]
try:
    if op == "setxattr":
        os.setxattr(path, sys.argv[3], sys.argv[4].encode())
    elif op == "write":
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, sys.argv[3].encode() + b"\n")
        finally:
            os.close(fd)
    elif op == "write_escaped":   # "\\0" and the like spelled out in the argument
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, sys.argv[3].encode().decode("unicode_escape").encode("latin1") + b"\n")
        finally:
            os.close(fd)
    elif op == "truncate":
        os.truncate(path, int(sys.argv[3]))
    elif op == "chmod":
        os.chmod(path, int(sys.argv[3], 8))
    elif op == "chown":
        os.chown(path, int(sys.argv[3]), int(sys.argv[4]))
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
PY
}
# pread_fd FD OFFSET LENGTH: bytes read through the open descriptor FD
# itself (not a reopen through /proc/self/fd), to stdout
pread_fd() {
    "$PY" -c 'import os, sys; sys.stdout.buffer.write(os.pread(int(sys.argv[1]), int(sys.argv[3]), int(sys.argv[2])))' "$@"
}
# holes PATH: the data/hole map of PATH via SEEK_DATA/SEEK_HOLE, "d:off:end h:off:end ..."
holes() {
    "$PY" - "$1" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size = os.fstat(fd).st_size
pos, out = 0, []
while pos < size:
    try:
        d = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        d = size
    if d > pos:
        out.append(f"h:{pos}:{d}")
    if d >= size:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    out.append(f"d:{d}:{h}")
    pos = h
print(" ".join(out))
PY
}

log "images: base <- vm (with data), base2 <- a, b (shared base), lone"
qemu-img create -q -f qcow2 "$SRC/base.qcow2" 64M
qemu-io -f qcow2 -c "write -P 0x11 0 64M" "$SRC/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$SRC/vm.qcow2"
qemu-io -f qcow2 -c "write -P 0x22 1M 2M" -c "write -P 0x23 10M 64k" -c "write -P 0x24 16M 48M" "$SRC/vm.qcow2" >/dev/null
qemu-img create -q -f qcow2 "$SRC/base2.qcow2" 16M
qemu-img create -q -f qcow2 -b base2.qcow2 -F qcow2 "$SRC/a.qcow2"
qemu-img create -q -f qcow2 -b base2.qcow2 -F qcow2 "$SRC/b.qcow2"
qemu-img create -q -f qcow2 "$SRC/lone.qcow2" 32M
qemu-io -f qcow2 -c "write -P 0x33 0 32M" "$SRC/lone.qcow2" >/dev/null
qemu-img create -q -f raw "$SRC/plain.img" 8M
for p in p q r; do   # pairs for commit --base/--drop, by name, and fallocate on an overlay
    qemu-img create -q -f qcow2 "$SRC/${p}0.qcow2" 8M
    qemu-io -f qcow2 -c "write -P 0x61 0 8M" "$SRC/${p}0.qcow2" >/dev/null
    qemu-img create -q -f qcow2 -b "${p}0.qcow2" -F qcow2 "$SRC/${p}1.qcow2"
    qemu-io -f qcow2 -c "write -P 0x62 1M 1M" "$SRC/${p}1.qcow2" >/dev/null
done
mount_imgfs "$SRC" "$MNT" --log "$T/log"
VM=$MNT/vm.qcow2 LONE=$MNT/lone.qcow2

log "attributes describe the image as qemu-img info does"
for node in "$VM/disk.raw" "$VM"; do
    a=$(getfattr --absolute-names --only-values -n user.imgfs.format "$node")
    [[ $a == qcow2 ]] || fail "user.imgfs.format of $node: $a"
done
[[ $(getfattr --absolute-names --only-values -n user.imgfs.virtual_size "$VM/disk.raw") == $((64 * M)) ]] || fail "virtual_size"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.cluster_size "$VM/disk.raw") == 65536 ]] || fail "cluster_size"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.backing_file "$VM/disk.raw") == base.qcow2 ]] || fail "backing_file"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.backing_format "$VM/disk.raw") == qcow2 ]] || fail "backing_format"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.chain_depth "$VM/disk.raw") == 2 ]] || fail "chain_depth"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.dirty "$VM/disk.raw") == 0 ]] || fail "dirty"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.corrupt "$VM/disk.raw") == 0 ]] || fail "corrupt"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.read_only "$VM/disk.raw") == 0 ]] || fail "read_only of vm"
ro=$(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/base.qcow2/disk.raw")
[[ $ro == "1: it is the backing file of vm.qcow2" ]] || fail "read_only of base: $ro"
alloc=$(getfattr --absolute-names --only-values -n user.imgfs.allocated "$VM/disk.raw")
(( alloc >= 2 * M )) || fail "allocated: $alloc"
getfattr --absolute-names -d -m user.imgfs "$VM/disk.raw" | grep -q "user.imgfs.snapshots" || fail "getfattr -d does not list snapshots"
echo "   format, sizes, backing, depth, flags and read-only reason as expected"

log "resize by attribute and by ctl; refusals"
exec {held}<"$VM/disk.raw"    # a handle opened before the changes
setfattr -n user.imgfs.resize -v +64M "$VM/disk.raw"
[[ $(stat -c %s "$VM/disk.raw") == $((128 * M)) ]] || fail "size after resize +64M: $(stat -c %s "$VM/disk.raw")"
[[ $(stat -c %s "$VM/layers/0-vm.qcow2.raw") == $((128 * M)) ]] || fail "layer 0 view not resized"
r=$(errno_of setxattr "$VM/disk.raw" user.imgfs.resize -1M)
[[ $r == EINVAL ]] || fail "shrink without ,shrink gave $r"
r=$(errno_of setxattr "$VM/disk.raw" user.imgfs.resize banana)
[[ $r == EINVAL ]] || fail "bad size gave $r"
grep -q "^last: user.imgfs.resize=banana: error: " "$VM/ctl" || fail "ctl does not show the refusal: $(cat "$VM/ctl")"
r=$(errno_of setxattr "$MNT/base.qcow2/disk.raw" user.imgfs.resize +1M)
[[ $r == EROFS ]] || fail "resize of a read-only image gave $r"
r=$(errno_of write "$VM/ctl" "resize 100M")
[[ $r == EINVAL ]] || fail "ctl shrink without --shrink gave $r"
echo "resize 100M --shrink" > "$VM/ctl"
[[ $(stat -c %s "$VM/disk.raw") == $((100 * M)) ]] || fail "ctl resize 100M --shrink: $(stat -c %s "$VM/disk.raw")"
grep -q "^last: resize 100M --shrink: ok" "$VM/ctl" || fail "ctl state: $(cat "$VM/ctl")"
echo "resize +28M" > "$VM/ctl"
[[ $(stat -c %s "$VM/disk.raw") == $((128 * M)) ]] || fail "ctl resize +28M"
r=$(errno_of write "$VM/ctl" "frobnicate")
[[ $r == EINVAL ]] || fail "unknown ctl command gave $r"
grep -q "^last: frobnicate: error: unknown command" "$VM/ctl" || fail "ctl does not say why frobnicate failed: $(cat "$VM/ctl")"
r=$(errno_of setxattr "$MNT/plain.img/disk.raw" user.imgfs.snapshot.create x)
[[ $r == EOPNOTSUPP || $r == ENOTSUP ]] || fail "a snapshot of a raw image gave $r, expected ENOTSUP"
grep -q "^last: user.imgfs.snapshot.create=x: error: " "$MNT/plain.img/ctl" || fail "ENOTSUP reason not in ctl: $(cat "$MNT/plain.img/ctl")"
setfattr -n user.imgfs.resize -v +1M "$LONE"     # the image's directory takes the attributes too
[[ $(stat -c %s "$LONE/disk.raw") == $((33 * M)) ]] || fail "resize by the directory's attribute"
setfattr -n user.imgfs.resize -v 32M,shrink "$LONE"
[[ $(stat -c %s "$LONE/disk.raw") == $((32 * M)) ]] || fail "shrink by the directory's attribute"
echo "   sizes follow at once (disk.raw, layers/0, by file or directory); refusals give EINVAL/ENOTSUP/EROFS with the reason in ctl"

log "a ctl line with a control character is refused whole"
size=$(stat -c %s "$VM/disk.raw")
r=$(errno_of write_escaped "$VM/ctl" 'resize +1M\0garbage')
[[ $r == EINVAL ]] || fail "a ctl line with a NUL byte gave $r"
[[ $(stat -c %s "$VM/disk.raw") == "$size" ]] || fail "a ctl line with a NUL byte resized the image"
grep -qF 'last: resize +1M\x00garbage: error: a command holds a control character' "$VM/ctl" || fail "ctl does not say why: $(cat "$VM/ctl")"
echo "   'resize +1M<NUL>garbage' gives EINVAL, size unchanged"

log "chmod and chown the view cannot honour are refused; the same values pass"
mode=$(stat -c %a "$VM/disk.raw")
r=$(errno_of chmod "$VM/disk.raw" 4777)
[[ $r == EPERM ]] || fail "chmod 4777 disk.raw gave $r"
[[ $(stat -c %a "$VM/disk.raw") == "$mode" ]] || fail "chmod 4777 changed the mode to $(stat -c %a "$VM/disk.raw")"
r=$(errno_of chmod "$VM/disk.raw" "$mode")
[[ $r == OK ]] || fail "chmod to the mode it has gave $r"
owner=$(stat -c %u "$VM/disk.raw"); group=$(stat -c %g "$VM/disk.raw")
r=$(errno_of chown "$VM/disk.raw" "$owner" "$group")
[[ $r == OK ]] || fail "chown to the owner it has gave $r"
if [[ $(id -u) == 0 ]]; then
    r=$(errno_of chown "$VM/disk.raw" 12345 12345)
    [[ $r == EPERM ]] || fail "chown 12345 disk.raw gave $r"
    [[ $(stat -c %u "$VM/disk.raw") == "$owner" ]] || fail "chown changed the owner"
fi
echo "   chmod 4777 gives EPERM, mode stays $mode; chmod/chown to the same values succeed"

log "snapshots by attribute and ctl; apply shows the old content through an open handle"
cmp -s <(head -c $((3 * M)) "$VM/disk.raw") <(pread_fd $held 0 $((3 * M))) || fail "held handle differs"
setfattr -n user.imgfs.snapshot.create -v before "$VM/disk.raw"
[[ -f $VM/snapshots/before.raw ]] || fail "snapshots/before.raw missing after create"
head -c $((3 * M)) "$VM/disk.raw" > "$T/before.head"
printf 'new data' | dd of="$VM/disk.raw" bs=1 seek=$((1 * M)) conv=notrunc status=none
pread_fd $held $((1 * M)) 8 > "$T/seen"   # page cache now holds the new bytes
[[ $(cat "$T/seen") == "new data" ]] || fail "the held handle does not see a write"
echo "snapshot create second" > "$VM/ctl"
ls "$VM/snapshots" | sort | tr '\n' ' ' | grep -q "before.raw second.raw" || fail "snapshots/: $(ls "$VM/snapshots")"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.snapshots "$VM/disk.raw") == $'before\nsecond' ]] || fail "user.imgfs.snapshots"
setfattr -n user.imgfs.snapshot.apply -v before "$VM/disk.raw"
cmp -s <(pread_fd $held 0 $((3 * M))) "$T/before.head" ||
    fail "after apply, the handle opened before still reads the new bytes (page cache not invalidated)"
cmp -s <(head -c $((3 * M)) "$VM/disk.raw") "$T/before.head" || fail "after apply, disk.raw does not read as before"
[[ $(stat -c %s "$VM/disk.raw") == $((128 * M)) ]] || fail "size after apply"
echo "snapshot apply second" > "$VM/ctl"
[[ $(pread_fd $held $((1 * M)) 8) == "new data" ]] || fail "after apply by ctl, the open handle does not read the snapshot's bytes"
echo "snapshot delete before" > "$VM/ctl"
[[ ! -e $VM/snapshots/before.raw ]] || fail "snapshots/before.raw still there after delete"
[[ -f $VM/snapshots/second.raw ]] || fail "snapshots/second.raw gone after deleting 'before'"
cmp -s <(dd if="$VM/snapshots/second.raw" bs=1 skip=$((1 * M)) count=8 status=none) <(printf 'new data') ||
    fail "snapshots/second.raw (the old index 1) shows the wrong snapshot"
setfattr -n user.imgfs.snapshot.delete -v second "$VM/disk.raw"
[[ -z $(ls "$VM/snapshots") ]] || fail "snapshots/ not empty: $(ls "$VM/snapshots")"
exec {held}<&-
echo "   create, apply, delete; views and an already-open handle follow"

log "truncate grows; shrinking needs -o allow_shrink"
truncate -s 160M "$VM/disk.raw"
[[ $(stat -c %s "$VM/disk.raw") == $((160 * M)) ]] || fail "truncate grow"
r=$(errno_of truncate "$VM/disk.raw" $((150 * M)))
[[ $r == EPERM ]] || fail "truncate shrink without allow_shrink gave $r"
r=$(errno_of truncate "$MNT/base.qcow2/disk.raw" $((100 * M)))
[[ $r == EROFS ]] || fail "truncate of a read-only image gave $r"
echo "   grow ok, shrink EPERM, read-only EROFS"

log "fallocate: punch-hole and zero-range make holes SEEK_HOLE sees"
fallocate --punch-hole --offset $((4 * M)) --length $((8 * M)) "$LONE/disk.raw"
fallocate --zero-range --offset $((20 * M)) --length $((2 * M)) "$LONE/disk.raw"
fallocate --punch-hole --offset 1000 --length 5000 "$LONE/disk.raw"   # inside a cluster: zeros, no hole
map=$(holes "$LONE/disk.raw")
[[ $map == "d:0:$((4 * M)) h:$((4 * M)):$((12 * M)) d:$((12 * M)):$((20 * M)) h:$((20 * M)):$((22 * M)) d:$((22 * M)):$((32 * M))" ]] ||
    fail "SEEK_DATA/SEEK_HOLE after fallocate: $map"
cp "$T/lone.exp" /dev/null 2>/dev/null || true
qemu-img convert -U -O raw "$SRC/lone.qcow2" "$T/lone.exp" 2>/dev/null || to_raw "$SRC/lone.qcow2" "$T/lone.exp"
"$PY" - "$T/lone.exp" <<'PY'
import sys
d = bytearray(b"\x33" * (32 << 20))
for off, n in ((1000, 5000), (4 << 20, 8 << 20), (20 << 20, 2 << 20)):
    d[off:off + n] = bytes(n)
open(sys.argv[1], "wb").write(d)
PY
cmp -s "$LONE/disk.raw" "$T/lone.exp" || fail "lone.qcow2 content after fallocate"
echo "   $map"
# an overlay: zero clusters hide the backing file's data
fallocate --punch-hole --offset $((4 * M)) --length $((2 * M)) "$MNT/r1.qcow2/disk.raw"
map=$(holes "$MNT/r1.qcow2/disk.raw")
[[ $map == "d:0:$((4 * M)) h:$((4 * M)):$((6 * M)) d:$((6 * M)):$((8 * M))" ]] || fail "overlay after punch-hole: $map"
cmp -s <(dd if="$MNT/r1.qcow2/disk.raw" bs=1M skip=4 count=2 status=none) <(head -c $((2 * M)) /dev/zero) ||
    fail "the punched range of the overlay does not read as zeros"
# raw: holes punched in the host file
printf 'data' | dd of="$MNT/plain.img/disk.raw" bs=1M seek=1 conv=notrunc,fsync status=none
head -c $((3 * M)) /dev/urandom | dd of="$MNT/plain.img/disk.raw" bs=1M seek=2 conv=notrunc,fsync status=none
fallocate --punch-hole --offset $((3 * M)) --length $((1 * M)) "$MNT/plain.img/disk.raw"
map=$(holes "$MNT/plain.img/disk.raw")
[[ $map == *"h:$((3 * M)):$((4 * M))"* ]] || fail "raw after punch-hole: $map"
cmp -s <(dd if="$SRC/plain.img" bs=1M skip=3 count=1 status=none) <(head -c $((1 * M)) /dev/zero) ||
    fail "the punched range of the raw file does not read as zeros"
echo "   overlay and raw: punched ranges read as zeros and show as holes"

log "commit by ctl (progress, busy) and by attribute; EBUSY for a shared base"
r=$(errno_of write "$MNT/a.qcow2/ctl" "commit")
[[ $r == EBUSY ]] || fail "commit into a base shared with b.qcow2 gave $r"
grep -q "backing file of b.qcow2" "$MNT/a.qcow2/ctl" || fail "EBUSY reason not in ctl: $(cat "$MNT/a.qcow2/ctl")"
to_raw "$SRC/vm.qcow2" "$T/vm.before"   # qemu's view of the image file as it is now (imgfs flushed on each op)
cmp -s "$VM/disk.raw" <(cat "$VM/disk.raw") || true
head -c $((160 * M)) "$VM/disk.raw" > "$T/vm.view"
exec {bheld}<"$MNT/base.qcow2/disk.raw"           # base's pages cached before the commit
cat "$MNT/base.qcow2/disk.raw" > /dev/null
# ~50 MiB to copy at 16 MiB/s: the commit runs for about 3 s
echo "commit --rate 16M" > "$VM/ctl"
sleep 0.5
state=$(cat "$VM/ctl")
grep -Eq "^current: running: commit [0-9]+% \(([0-9.]+ [KMG]?i?B) of [0-9.]+ MiB\)$" <<<"$state" ||
    fail "ctl during the commit: $state"
r=$(errno_of write "$VM/ctl" "flush")
[[ $r == EBUSY ]] || fail "a second command during the commit gave $r"
r=$(errno_of setxattr "$VM/disk.raw" user.imgfs.snapshot.create during)
[[ $r == EBUSY ]] || fail "an attribute command during the commit gave $r"
echo "   during the commit: $(grep current <<<"$state"); a second command gets EBUSY"
wait_idle "$VM/ctl"
grep -q "^last: commit --rate 16M: ok" "$VM/ctl" || fail "commit: $(cat "$VM/ctl")"
cmp -s <(pread_fd $bheld 0 $((64 * M))) <(head -c $((64 * M)) "$T/vm.view") ||
    fail "a handle on base.qcow2/disk.raw opened before the commit reads stale pages"
exec {bheld}<&-
cmp -s "$VM/disk.raw" "$T/vm.view" || fail "disk.raw reads differently after commit"
cmp -s <(head -c $((64 * M)) "$MNT/base.qcow2/disk.raw") <(head -c $((64 * M)) "$T/vm.view") ||
    fail "base.qcow2/disk.raw does not show the committed data"
[[ $(stat -c %s "$MNT/base.qcow2/disk.raw") == $((160 * M)) ]] || fail "base did not grow to the top's size"
setfattr -n user.imgfs.commit -v "" "$VM/disk.raw"
wait_idle "$VM/ctl"
grep -q "^last: user.imgfs.commit=: ok" "$VM/ctl" || fail "commit by attribute: $(cat "$VM/ctl")"
echo "check" > "$VM/ctl"
wait_idle "$VM/ctl"
grep -q "^last: check: ok" "$VM/ctl" || fail "check by ctl: $(cat "$VM/ctl")"
echo "   commit and check run in the background; views follow"

log "commit --base by depth with --drop keeps the top; by name through the attribute empties it"
to_raw "$SRC/p1.qcow2" "$T/p.view"
echo "commit --base 1 --drop" > "$MNT/p1.qcow2/ctl"
wait_idle "$MNT/p1.qcow2/ctl"
grep -q "^last: commit --base 1 --drop: ok" "$MNT/p1.qcow2/ctl" || fail "commit --base 1 --drop: $(cat "$MNT/p1.qcow2/ctl")"
cmp -s "$MNT/p0.qcow2/disk.raw" "$T/p.view" || fail "p0.qcow2 does not show what was committed"
cmp -s "$MNT/p1.qcow2/disk.raw" "$T/p.view" || fail "p1.qcow2 reads differently after the commit"
to_raw "$SRC/q1.qcow2" "$T/q.view"
setfattr -n user.imgfs.commit -v q0.qcow2 "$MNT/q1.qcow2/disk.raw"
wait_idle "$MNT/q1.qcow2/ctl"
grep -q "^last: user.imgfs.commit=q0.qcow2: ok" "$MNT/q1.qcow2/ctl" || fail "commit by name: $(cat "$MNT/q1.qcow2/ctl")"
cmp -s "$MNT/q0.qcow2/disk.raw" "$T/q.view" || fail "q0.qcow2 does not show what was committed"
cmp -s "$MNT/q1.qcow2/disk.raw" "$T/q.view" || fail "q1.qcow2 reads differently after the commit"
echo "   --base/--drop and a base named by file"

umount_imgfs "$MNT"

log "qemu-img sees what the mount did"
for img in vm base lone a b base2; do check_clean "$SRC/$img.qcow2"; done
[[ $(img_vsize "$SRC/vm.qcow2") == $((160 * M)) ]] || fail "qemu: vm size"
[[ $(img_vsize "$SRC/base.qcow2") == $((160 * M)) ]] || fail "qemu: base size"
[[ -z $(qemu-img snapshot -l "$SRC/vm.qcow2") ]] || fail "qemu: snapshots left: $(qemu-img snapshot -l "$SRC/vm.qcow2")"
qemu-img compare -q -F raw "$SRC/vm.qcow2" "$T/vm.view" || fail "qemu: vm content"
qemu-img compare -q -f qcow2 -F raw "$SRC/lone.qcow2" "$T/lone.exp" || fail "qemu: lone content"
m=$(qemu-img map --output=json "$SRC/vm.qcow2" | "$PY" -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]))')
[[ $m == 0 ]] || fail "qemu: vm.qcow2 still holds $m bytes after commit"
top_bytes() { qemu-img map --output=json "$1" | "$PY" -c 'import json,sys; print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]))'; }
[[ $(top_bytes "$SRC/p1.qcow2") == $((1 * M)) ]] || fail "qemu: p1.qcow2 should keep its 1 MiB (--drop)"
[[ $(top_bytes "$SRC/q1.qcow2") == 0 ]] || fail "qemu: q1.qcow2 should be empty after the commit"
for img in p0 p1 q0 q1 r0 r1; do check_clean "$SRC/$img.qcow2"; done
"$PY" -c "import sys; d = bytearray(b'\x61' * (8 << 20)); d[1 << 20:2 << 20] = b'\x62' * (1 << 20); d[4 << 20:6 << 20] = bytes(2 << 20); open(sys.argv[1], 'wb').write(d)" "$T/r1.exp"
qemu-img compare -q -f qcow2 -F raw "$SRC/r1.qcow2" "$T/r1.exp" || fail "qemu: r1 content after punch-hole"
"$PY" -c "import sys; open(sys.argv[1], 'wb').write(b'\x61' * (8 << 20))" "$T/r0.exp"
qemu-img compare -q -f qcow2 -F raw "$SRC/r0.qcow2" "$T/r0.exp" || fail "qemu: r0 (the backing file) changed"

log "read-only mount refuses control"
mount_imgfs "$SRC" "$MNT" -r
r=$(errno_of setxattr "$MNT/lone.qcow2/disk.raw" user.imgfs.resize +1M)
[[ $r == EROFS ]] || fail "resize on a read-only mount gave $r"
# (the kernel refuses it on a read-only mount before imgfs sees it)
r=$(errno_of write "$MNT/lone.qcow2/ctl" "snapshot create x")
[[ $r == EROFS || $r == EACCES ]] || fail "ctl on a read-only mount gave $r"
umount_imgfs "$MNT"

log "-o allow_shrink lets truncate shrink"
mount_imgfs "$SRC" "$MNT" -o allow_shrink
truncate -s 16M "$MNT/lone.qcow2/disk.raw"
[[ $(stat -c %s "$MNT/lone.qcow2/disk.raw") == $((16 * M)) ]] || fail "allow_shrink truncate"
umount_imgfs "$MNT"
check_clean "$SRC/lone.qcow2"
[[ $(img_vsize "$SRC/lone.qcow2") == $((16 * M)) ]] || fail "qemu: lone size after shrink"
echo "PASS: control"
