#!/usr/bin/env bash
# A mount of damaged images: MOUNT_FUZZ_IMAGES (default 300) qcow2 images
# made by qemu-img and then damaged (random bytes, bit flips, runs of 0 and
# 0xff, truncation; fixed seed) share one SOURCE with one good image. Every
# view of every image that is listed is read (its start, its end and a few
# places between), its SEEK_DATA/SEEK_HOLE map asked, its attributes and
# ctl read, and small writes go to each disk.raw. Errors are fine (that is
# what damage gets); the daemon must never die or hang, and the good image
# must keep reading (and writing) right throughout.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img qemu-io timeout
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt SEEDS=$T/seeds
mkdir -p "$SRC" "$MNT" "$SEEDS"
N=${MOUNT_FUZZ_IMAGES:-300}
qemu-img create -q -f qcow2 -o cluster_size=512 "$SEEDS/small.qcow2" 4M
qemu-io -f qcow2 -c "write -P 1 0 100k" -c "write -P 2 1M 300k" -c "write -z 2M 64k" "$SEEDS/small.qcow2" >/dev/null
qemu-img snapshot -c s1 "$SEEDS/small.qcow2"
qemu-img bitmap --add "$SEEDS/small.qcow2" bm
qemu-img create -q -f qcow2 -o cluster_size=16k,extended_l2=on "$SEEDS/l2.qcow2" 4M
qemu-io -f qcow2 -c "write -P 3 1000 20000" -c "write -P 4 3M 70000" "$SEEDS/l2.qcow2" >/dev/null
qemu-img create -q -f qcow2 -o compat=0.10,cluster_size=1k "$SEEDS/v2.qcow2" 4M
qemu-io -f qcow2 -c "write -P 5 0 2M" "$SEEDS/v2.qcow2" >/dev/null
qemu-img snapshot -c x "$SEEDS/v2.qcow2"
qemu-img create -q -f qcow2 -o cluster_size=4k,refcount_bits=1 "$SEEDS/rc1.qcow2" 4M
qemu-io -f qcow2 -c "write -P 8 0 1M" "$SEEDS/rc1.qcow2" >/dev/null
head -c 2M /dev/urandom > "$SEEDS/b.raw"
qemu-img create -q -f qcow2 -b b.raw -F raw "$SEEDS/ov.qcow2"
qemu-io -f qcow2 -c "write -P 9 64k 64k" "$SEEDS/ov.qcow2" >/dev/null
cp "$SEEDS/b.raw" "$SRC/b.raw"

"$PY" - "$SEEDS" "$SRC" "$N" "$HERE/../interop/tools" <<'EOF'
import os, random, sys
seeds_dir, src, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, sys.argv[4])
from damage import damage
seeds = sorted(f for f in os.listdir(seeds_dir) if f.endswith(".qcow2"))
for it in range(n):
    rnd = random.Random(7000 + it)
    name = rnd.choice(seeds)
    data = damage(bytearray(open(os.path.join(seeds_dir, name), "rb").read()), rnd, (512, 4096, 65536))
    open(os.path.join(src, "f%03d-%s" % (it, name)), "wb").write(bytes(data))
EOF
qemu-img create -q -f qcow2 "$SRC/good.qcow2" 8M
qemu-io -f qcow2 -c "write -P 0x47 0 8M" "$SRC/good.qcow2" >/dev/null
qemu-img convert -O raw "$SRC/good.qcow2" "$T/good.raw"

mount_imgfs "$SRC" "$MNT" --log "$T/log"
listed=$(ls "$MNT" | wc -l)
echo "   $N damaged images and a good one: $listed listed, the rest left out"

log "every view of every image: read, seek, attributes, ctl, small writes"
rc=0
timeout 900 "$PY" - "$MNT" "$T/good.raw" <<'EOF' || rc=$?
import errno, os, random, sys
mnt, good_raw = sys.argv[1], sys.argv[2]
good = open(good_raw, "rb").read()
rnd = random.Random(11)
stats = {"reads": 0, "errors": 0, "writes": 0}
def check_good(tag):
    with open(os.path.join(mnt, "good.qcow2", "disk.raw"), "rb") as f:
        for off in (0, 4 << 20, len(good) - 4096):
            f.seek(off)
            if f.read(4096) != good[off:off + 4096]: sys.exit("good.qcow2 reads wrong after " + tag)
def try_(fn):
    try: return fn()
    except OSError: stats["errors"] += 1
def views(d):
    out = []
    for sub in ("", "layers", "snapshots", "partitions"):
        p = os.path.join(d, sub)
        names = try_(lambda: os.listdir(p)) or []
        for n in names:
            q = os.path.join(p, n)
            if n.endswith(".raw") or n in ("info.json", "ctl"): out.append(q)
    return out
def read_view(p):
    fd = try_(lambda: os.open(p, os.O_RDONLY))
    if fd is None: return
    try:
        size = os.fstat(fd).st_size
        for off in {0, max(0, size - 65536), rnd.randrange(max(1, size))}:
            try_(lambda: os.pread(fd, 65536, off)); stats["reads"] += 1
        for whence in (os.SEEK_DATA, os.SEEK_HOLE):
            try_(lambda: os.lseek(fd, 0, whence))
        for a in (try_(lambda: os.listxattr(p)) or []):
            try_(lambda: os.getxattr(p, a))
    finally:
        os.close(fd)
names = sorted(os.listdir(mnt))
for i, name in enumerate(names):
    d = os.path.join(mnt, name)
    for a in (try_(lambda: os.listxattr(d)) or []): try_(lambda: os.getxattr(d, a))
    for v in views(d): read_view(v)
    disk = os.path.join(d, "disk.raw")
    fd = try_(lambda: os.open(disk, os.O_WRONLY))
    if fd is not None and name != "good.qcow2":
        size = try_(lambda: os.fstat(fd).st_size) or 0
        for _ in range(3):
            if size: try_(lambda: os.pwrite(fd, b"\x5a" * rnd.randint(1, 70000), rnd.randrange(size))); stats["writes"] += 1
        try_(lambda: os.fsync(fd))
        os.close(fd)
    if i % 25 == 0: check_good(name)
check_good("the last image")
# The good image still takes writes.
with open(os.path.join(mnt, "good.qcow2", "disk.raw"), "r+b") as f:
    f.seek(4096); f.write(b"\x11" * 4096); f.flush(); os.fsync(f.fileno())
print("   %d images: %d reads, %d writes, %d refused or failed requests" % (len(names), stats["reads"], stats["writes"], stats["errors"]))
EOF
[[ $rc != 124 ]] || fail "the walk over the damaged images hung (900 s)"
[[ $rc == 0 ]] || fail "the walk failed (exit $rc)"
mount_alive "$MNT" || fail "the daemon died"
umount_imgfs "$MNT"
printf '\x11%.0s' $(seq 1 4096) | dd of="$T/good.raw" bs=4096 seek=1 conv=notrunc status=none
qemu-img compare -q -f qcow2 -F raw "$SRC/good.qcow2" "$T/good.raw" || fail "good.qcow2 holds the wrong bytes"
check_clean "$SRC/good.qcow2"
echo "PASS: mount_fuzz"
