#!/usr/bin/env bash
# Freed clusters are reused within a mount, and no write lands on metadata:
#  - 10 cycles of snapshot create / rewrite 16 MiB / snapshot delete through
#    the mount leave an image file at most 1.25x what qemu leaves after the
#    same steps (qemu-img snapshot + qemu-io), with the same content, clean;
#  - discarding and rewriting under concurrent readers keeps every read
#    right (a cluster freed under an in-flight read is not handed out until
#    that read is done) and the file does not grow past the data;
#  - an L1 entry pointing at the refcount table: a write through it fails
#    with EIO, the refcount table is untouched, the image is marked corrupt
#    and the log names the structure (qemu refuses the same write).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img qemu-io setfattr getfattr fallocate
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt Q=$T/qemu
mkdir -p "$SRC" "$MNT" "$Q"
M=$((1024 * 1024))
qemu-img create -q -f qcow2 "$SRC/cyc.qcow2" 64M
qemu-io -f qcow2 -c "write -P 0x11 0 16M" "$SRC/cyc.qcow2" >/dev/null
cp "$SRC/cyc.qcow2" "$Q/cyc.qcow2"
for i in $(seq 0 9); do head -c $((16 * M)) /dev/urandom > "$T/data$i"; done

log "10 cycles of snapshot create / rewrite 16 MiB / delete: imgfs against qemu"
mount_imgfs "$SRC" "$MNT" --log "$T/log"
D=$MNT/cyc.qcow2/disk.raw
for i in $(seq 0 9); do
    setfattr -n user.imgfs.snapshot.create -v s "$D"
    dd if="$T/data$i" of="$D" bs=1M conv=notrunc,fsync status=none
    setfattr -n user.imgfs.snapshot.delete -v s "$D"
done
umount_imgfs "$MNT"
for i in $(seq 0 9); do
    qemu-img snapshot -c s "$Q/cyc.qcow2"
    qemu-io -f qcow2 -c "write -s $T/data$i 0 16M" "$Q/cyc.qcow2" >/dev/null
    qemu-img snapshot -d s "$Q/cyc.qcow2"
done
ours=$(stat -c %s "$SRC/cyc.qcow2") theirs=$(stat -c %s "$Q/cyc.qcow2")
echo "   image file: imgfs $ours bytes, qemu $theirs bytes ($(( ours * 100 / theirs ))%)"
(( ours * 4 <= theirs * 5 )) || fail "imgfs leaves $ours bytes, more than 1.25x qemu's $theirs"
check_clean "$SRC/cyc.qcow2"
qemu-img compare -q "$SRC/cyc.qcow2" "$Q/cyc.qcow2" || fail "content differs from qemu's after the same steps"
echo "   same content as qemu's"

log "discard and rewrite under concurrent readers"
qemu-img create -q -f qcow2 "$SRC/churn.qcow2" 32M
mount_imgfs "$SRC" "$MNT" --log "$T/log"
D=$MNT/churn.qcow2/disk.raw
"$PY" - "$D" <<'EOF' || fail "a read saw bytes that were never written there"
import ctypes, ctypes.util, mmap, os, random, sys, threading
path = sys.argv[1]
CL, N, GENS = 64 << 10, 128, 40   # 128 clusters of 64 KiB: 8 MiB churned
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
fd = os.open(path, os.O_RDWR)
stop = False
bad = []
def pattern(c, g): return bytes([(c * 7 + g) % 251 + 1]) * CL
def reader():
    # O_DIRECT: every read goes to the daemon (and is spliced from the image).
    rfd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    buf = mmap.mmap(-1, CL)
    rng = random.Random()
    while not stop:
        c = rng.randrange(N)
        os.preadv(rfd, [buf], c * CL)
        # Each 4 KiB holds zeros or a generation this cluster was written
        # with; another cluster's bytes mean a cluster reused under the read.
        for k in range(0, CL, 4096):
            b = buf[k]
            if b and not 1 <= (b - 1 - c * 7) % 251 < GENS:
                bad.append(("foreign", c, k, b))
                return
    os.close(rfd)
threads = [threading.Thread(target=reader) for _ in range(3)]
for t in threads: t.start()
rng = random.Random(3)
for g in range(1, GENS):
    for c in rng.sample(range(N), 48):
        os.pwrite(fd, pattern(c, g), c * CL)
    os.fsync(fd)
    for c in rng.sample(range(N), 48):   # punch holes: clusters freed, reusable
        if libc.fallocate(fd, 3, c * CL, CL) != 0:
            bad.append(("punch", ctypes.get_errno()))
            break
    os.fsync(fd)
stop = True
for t in threads: t.join()
os.close(fd)
if bad: sys.exit("bad reads: %r" % bad[:5])
EOF
umount_imgfs "$MNT"
sz=$(stat -c %s "$SRC/churn.qcow2")
echo "   39 rounds of writes and punched holes over 8 MiB: file $sz bytes"
(( sz < 24 * M )) || fail "churning 8 MiB grew the file to $sz bytes: freed clusters were not reused"
check_clean "$SRC/churn.qcow2"

log "8 rounds of write 8 MiB / commit: the emptied top reuses its clusters (imgfs against qemu)"
qemu-img create -q -f qcow2 "$SRC/cbase.qcow2" 64M
qemu-img create -q -f qcow2 -b cbase.qcow2 -F qcow2 "$SRC/ctop.qcow2"
mkdir -p "$Q/c"
cp "$SRC/cbase.qcow2" "$SRC/ctop.qcow2" "$Q/c/"
mount_imgfs "$SRC" "$MNT" --log "$T/log"
for i in $(seq 0 7); do
    dd if="$T/data$i" of="$MNT/ctop.qcow2/disk.raw" bs=1M count=8 seek=$((i * 4)) conv=notrunc,fsync status=none
    echo commit > "$MNT/ctop.qcow2/ctl"
    for _ in $(seq 1 200); do grep -q "current: idle" "$MNT/ctop.qcow2/ctl" && break; sleep 0.05; done
    grep -q "last: commit: ok" "$MNT/ctop.qcow2/ctl" || fail "commit round $i: $(cat "$MNT/ctop.qcow2/ctl")"
done
umount_imgfs "$MNT"
for i in $(seq 0 7); do
    qemu-io -f qcow2 -c "write -s $T/data$i $((i * 4 * M)) 8M" "$Q/c/ctop.qcow2" >/dev/null
    qemu-img commit -q "$Q/c/ctop.qcow2"
done
ours=$(stat -c %s "$SRC/ctop.qcow2") theirs=$(stat -c %s "$Q/c/ctop.qcow2")
echo "   top after 8 commits: imgfs $ours bytes, qemu $theirs bytes"
(( ours * 4 <= theirs * 5 )) || fail "the top holds $ours bytes after 8 commits, more than 1.25x qemu's $theirs"
check_clean "$SRC/ctop.qcow2"
check_clean "$SRC/cbase.qcow2"
qemu-img compare -q "$SRC/cbase.qcow2" "$Q/c/cbase.qcow2" || fail "the committed base differs from qemu's"

log "a write through an L1 entry that points at the refcount table is refused"
qemu-img create -q -f qcow2 "$SRC/ov.qcow2" 1G
qemu-io -f qcow2 -c "write -P 0x22 0 64k" "$SRC/ov.qcow2" >/dev/null
"$PY" - "$SRC/ov.qcow2" <<'EOF'
import struct, sys
f = open(sys.argv[1], "r+b")
h = f.read(72)
l1_off = struct.unpack(">Q", h[40:48])[0]
rt_off = struct.unpack(">Q", h[48:56])[0]
f.seek(l1_off + 8)   # L1[1]: guest bytes 512 MiB..1 GiB
f.write(struct.pack(">Q", rt_off | (1 << 63)))
EOF
cp "$SRC/ov.qcow2" "$T/ov.before"
rt_sha() { "$PY" - "$1" <<'EOF'
import hashlib, struct, sys
f = open(sys.argv[1], "rb"); h = f.read(72)
off = struct.unpack(">Q", h[48:56])[0]; n = struct.unpack(">I", h[56:60])[0]
f.seek(off); print(hashlib.sha256(f.read(n * 65536)).hexdigest())
EOF
}
before=$(rt_sha "$SRC/ov.qcow2")
mount_imgfs "$SRC" "$MNT" --log "$T/log"
r=$(write_errno "$MNT/ov.qcow2/disk.raw" $((512 * M + 4096)))
[[ $r == EIO ]] || fail "a write through an L1 entry on the refcount table gave $r, expected EIO"
grep -q "overlaps the refcount table" "$T/log" || fail "the log does not name the refcount table"
umount_imgfs "$MNT"
[[ $(rt_sha "$SRC/ov.qcow2") == "$before" ]] || fail "the refcount table changed"
qemu-img info --output=json "$SRC/ov.qcow2" | grep -q '"corrupt": true' || fail "the image is not marked corrupt"
echo "   EIO; $(grep -o "preventing a write.*" "$T/log" | head -1)"
echo "PASS: space_reuse"
