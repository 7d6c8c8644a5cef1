#!/usr/bin/env bash
# A disk opened write-only, or read-write with O_DIRECT, is written past
# the kernel's page cache (no copy into it: the writer cannot map the
# file or asked to bypass the cache). What other descriptors hold stays right: a reader's cached
# pages and a shared mapping show each write at once, on disk.raw and on a
# partition. Unaligned writes and fsync work on such a descriptor; after
# unmount the image passes qemu-img check and holds what was written.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io sfdisk
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
M=$((1024 * 1024))
qemu-img create -q -f raw "$T/base.raw" 64M
echo 'label: dos
start=2048, size=20480, type=83' | sfdisk -q "$T/base.raw"
qemu-io -f raw -c "write -P 0x11 16M 8M" "$T/base.raw" >/dev/null
qemu-img convert -q -f raw -O qcow2 "$T/base.raw" "$SRC/d.qcow2"
cp "$T/base.raw" "$T/want.raw"

mount_imgfs "$SRC" "$MNT"
log "writes through a write-only descriptor, seen by cached readers and a mapping"
"$PY" - "$MNT/d.qcow2" "$T/want.raw" <<'EOF' || fail "a write-only descriptor's writes"
import mmap, os, sys
disk, want = sys.argv[1] + "/disk.raw", sys.argv[2]
part = sys.argv[1] + "/partitions/p1.raw"
M = 1 << 20
model = open(want, "r+b")

def put(fd, data, off, shift=0):
    assert os.pwrite(fd, data, off) == len(data), "short write"
    model.seek(off + shift)
    model.write(data)

def check(what, got, off, n):
    model.seek(off)
    if got != model.read(n):
        sys.exit(f"{what}: stale bytes at {off}+{n}")

r = os.open(disk, os.O_RDONLY)
os.pread(r, 8 * M, 16 * M)                    # into the page cache
m = mmap.mmap(r, 8 * M, mmap.MAP_SHARED, mmap.PROT_READ, offset=16 * M)
m[:]
w = os.open(disk, os.O_WRONLY)
put(w, b"\x22" * (2 * M), 17 * M)
put(w, b"\x33" * 3, 19 * M + 4097)            # inside a page
put(w, os.urandom(5000), 20 * M - 1000)       # across pages, unaligned
os.fsync(w)
check("a cached reader", os.pread(r, 8 * M, 16 * M), 16 * M, 8 * M)
check("a shared mapping", m[:], 16 * M, 8 * M)

# The write-only descriptor left no pages of its own in the cache: the
# 4 MiB it writes now are absent from a mapping that never touched them.
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
addr = libc.mmap(None, 4 * M, mmap.PROT_READ, mmap.MAP_SHARED, r, 32 * M)
if addr in (None, ctypes.c_void_p(-1).value):
    sys.exit("mmap failed: " + os.strerror(ctypes.get_errno()))
put(w, os.urandom(4 * M), 32 * M)
vec = (ctypes.c_ubyte * (4 * M // mmap.PAGESIZE))()
if libc.mincore(ctypes.c_void_p(addr), ctypes.c_size_t(4 * M), vec) != 0:
    sys.exit("mincore failed: " + os.strerror(ctypes.get_errno()))
cached = sum(v & 1 for v in vec)
if cached:
    sys.exit(f"{cached} pages of a write-only descriptor's write sit in the page cache")
check("a later read", os.pread(r, 4 * M, 32 * M), 32 * M, 4 * M)

# A read-write descriptor opened with O_DIRECT (fio, databases) is
# written past the cache too; readers and the mapping follow, and it
# reads its own writes.
d = os.open(disk, os.O_RDWR | os.O_DIRECT)
buf = mmap.mmap(-1, 64 * 1024)               # aligned, as O_DIRECT wants
for k, off in enumerate((16 * M, 18 * M + 4096, 23 * M - 65536)):
    buf[:] = bytes([0x50 + k]) * len(buf)
    assert os.pwritev(d, [buf], off) == len(buf), "short O_DIRECT write"
    model.seek(off)
    model.write(buf[:])
back = mmap.mmap(-1, 64 * 1024)
os.preadv(d, [back], 18 * M + 4096)
check("the O_DIRECT descriptor itself", back[:], 18 * M + 4096, 64 * 1024)
check("a cached reader after O_DIRECT writes", os.pread(r, 8 * M, 16 * M), 16 * M, 8 * M)
check("a shared mapping after O_DIRECT writes", m[:], 16 * M, 8 * M)
os.close(d)

# A partition opened write-only; disk.raw's cached pages follow.
pr = os.open(part, os.O_RDONLY)
os.pread(pr, M, 0)
os.pread(r, M, 2048 * 512)
pw = os.open(part, os.O_WRONLY)
put(pw, b"\x44" * 6000, 300, shift=2048 * 512)
os.fsync(pw)
check("disk.raw after a partition's write", os.pread(r, M, 2048 * 512), 2048 * 512, M)
model.seek(2048 * 512)
if os.pread(pr, M, 0) != model.read(M):
    sys.exit("the partition's reader: stale bytes")
m.close()
for fd in (r, w, pr, pw):
    os.close(fd)
print("   cached reader, mapping and partition see every write; no pages cached by the writer")
EOF
umount_imgfs "$MNT"
check_clean "$SRC/d.qcow2"
to_raw "$SRC/d.qcow2" "$T/got.raw"
assert_same "$T/got.raw" "$T/want.raw" "d.qcow2 after the writes"
echo "PASS: write-only descriptors"
