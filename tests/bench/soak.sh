#!/usr/bin/env bash
# shellcheck disable=SC2317  # the helpers of cleanup() run from the EXIT trap
# Soak test of a read-write mount: tests/bench/soak.sh MINUTES
#
# Four qcow2 images (64 KiB clusters; an overlay on a backing file kept
# outside SOURCE; 4 KiB clusters; zlib-compressed data with extended L2
# entries), 256 MiB virtual each, on tmpfs (/dev/shm) when it exists, mounted
# with the build's imgfs. Eight python threads, two per image, each owning a
# disjoint 96 MiB region of its disk: random reads and writes of 4 KiB-1 MiB
# (aligned and unaligned; two threads use O_DIRECT), fsync now and then,
# unverified reads of the neighbour's region, and every read of its own
# region compared with a model of what it wrote. Two of them also drive the
# control of two images each, by ctl and by attribute: snapshot create/delete
# (at most 3 per image), resize +64M then back with --shrink (beyond every
# region; the new bytes must read as zeros), read-only check (must say ok),
# flush, attribute reads (dirty/corrupt/read_only must stay 0), reads of the
# snapshot views. EBUSY is retried, not an error.
#
# Every 10 s one line: the daemon's VmRSS, each image file's size and
# allocated bytes, ops per worker. At the end: unmount, `qemu-img check`
# (exit 0: no errors, no leaks), snapshot names and virtual size as
# modelled, the whole disk (`qemu-img convert -O raw`) equal to the model,
# then (SOAK_REPLAY=1) the same writes, snapshot and resize operations
# replayed offline by qemu-io/qemu-img on copies of the original images,
# to compare file sizes.
#
# Fails on: an I/O error, a data mismatch, the daemon dying, a worker making
# no progress for SOAK_HANG_S, a control command that does not end in ok, an
# unclean image, VmRSS growing by more than SOAK_RSS_GROWTH_MIB in the second
# half of the run over the first half's maximum, and (only if SOAK_MAX_RATIO
# is set) an image file larger than SOAK_MAX_RATIO x what qemu's replay left
# (x the virtual size when SOAK_REPLAY=0). Run by hand, not by ctest.
#
# Environment:
#   IMGFS_BUILD=./build   IMGFS=$IMGFS_BUILD/mounttool/imgfs
#   SOAK_SEED=1           seed of the workers and of the image contents
#   SOAK_RSS_GROWTH_MIB=64
#   SOAK_HANG_S=60
#   SOAK_MAX_RATIO=       unset: file size ratios are only reported
#   SOAK_REPLAY=1         0: no offline qemu replay
#   SOAK_WORKDIR=         parent of the scratch dir (default /dev/shm, else $TMPDIR or /tmp)
#   SOAK_MIN_FREE_MIB=2048  fail before the scratch file system fills up (tmpfs is RAM)
#   SOAK_KEEP=0           1: keep the scratch dir (images, mount log)
# The last line is `soak: PASS` (exit 0) or `soak: FAIL: <reason>` (exit 1).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${IMGFS_BUILD:=$(cd "$HERE/../.." && pwd)/build}"
: "${IMGFS:=$IMGFS_BUILD/mounttool/imgfs}"
SEED=${SOAK_SEED:-1}
KEEP=${SOAK_KEEP:-0}

VERDICT="FAIL: the script stopped early"
T="" MNT="" DAEMON_PID="" DRIVER_PID=""

say() { printf '[soak %s] %s\n' "$(date +%T)" "$*"; }
die() { VERDICT="FAIL: $*"; exit 1; }

# running PID: the process exists and is not a zombie.
running() { [[ -e /proc/$1 ]] && ! grep -q '^State:[[:space:]]*Z' "/proc/$1/status" 2>/dev/null; }
mounted() { [[ -n $MNT ]] && grep -q " $MNT fuse" /proc/mounts; }
# daemon_ours: the imgfs daemon this script started is still there.
daemon_ours() {
    [[ -n $DAEMON_PID ]] && running "$DAEMON_PID" &&
        tr '\0' ' ' <"/proc/$DAEMON_PID/cmdline" 2>/dev/null | grep -q "imgfs mount .*$MNT"
}
# within SECONDS CMD...: runs CMD in the background and waits at most SECONDS
# for it, by polling: a command stuck on a hung FUSE mount cannot be killed
# or reaped until the daemon goes, so it is never waited for blindly.
within() {
    local secs=$1 p i
    shift
    "$@" >/dev/null 2>&1 &
    p=$!
    for ((i = 0; i < secs * 5; i++)); do
        if ! running "$p"; then wait "$p"; return; fi
        sleep 0.2
    done
    kill -9 "$p" 2>/dev/null
    return 1
}
# The daemon's threads, for a hang report: kernel wait channel, then gdb's backtraces.
dump_daemon_stacks() {
    local tid
    echo "---- imgfs daemon (pid $DAEMON_PID) threads at the hang: kernel wait channel ----"
    for tid in /proc/"$DAEMON_PID"/task/*; do
        printf '  %s %s %s\n' "${tid##*/}" "$(cat "$tid/comm" 2>/dev/null)" "$(cat "$tid/wchan" 2>/dev/null)"
    done
    if command -v gdb >/dev/null 2>&1; then
        echo "---- gdb backtraces (12 frames per thread) ----"
        timeout 120 gdb -p "$DAEMON_PID" -batch -nx -ex "set pagination off" -ex "thread apply all bt 12" 2>&1 |
            grep -E '^(Thread|#)' | head -n 400
    fi
    echo "----"
}

cleanup() {
    set +e
    trap - EXIT INT TERM ERR
    if [[ -n $DRIVER_PID ]] && running "$DRIVER_PID"; then kill -9 "$DRIVER_PID" 2>/dev/null; fi
    if mounted && daemon_ours; then
        if [[ $VERDICT == "FAIL: hang"* ]]; then dump_daemon_stacks; fi
        if ! within 60 "$IMGFS" umount "$MNT"; then
            echo "imgfs umount did not end within 60 s: killing the daemon (pid $DAEMON_PID), detaching the mount"
            if daemon_ours; then kill -9 "$DAEMON_PID" 2>/dev/null; fi
            sleep 1
        fi
    fi
    # The daemon we started, if it outlived its mount (by its pid only).
    if daemon_ours; then
        kill "$DAEMON_PID" 2>/dev/null
        for _ in $(seq 1 50); do running "$DAEMON_PID" || break; sleep 0.2; done
        if daemon_ours; then kill -9 "$DAEMON_PID" 2>/dev/null; fi
    fi
    if mounted; then fusermount3 -u -z "$MNT" >/dev/null 2>&1 || umount -l "$MNT" 2>/dev/null; fi
    if [[ $VERDICT != PASS && -n $T && -s $T/mount.log ]]; then
        echo "---- last lines of the mount log ($T/mount.log) ----"
        tail -n 40 "$T/mount.log"
        echo "----"
    fi
    if [[ -n $T && -d $T ]]; then
        if [[ $KEEP == 1 ]]; then echo "scratch dir kept: $T"; else rm -rf "$T"; fi
    fi
    if [[ $VERDICT == PASS ]]; then
        echo "soak: PASS"
        exit 0
    fi
    echo "soak: $VERDICT"
    exit 1
}
trap cleanup EXIT
trap 'VERDICT="FAIL: interrupted"; exit 1' INT TERM
trap 'VERDICT="FAIL: command failed at line $LINENO: $BASH_COMMAND"' ERR

# ------------------------------------------------------------------ preflight
[[ $# -eq 1 && $1 =~ ^[1-9][0-9]*$ ]] || { echo "usage: $0 MINUTES" >&2; VERDICT="FAIL: usage"; exit 1; }
MINUTES=$1
[[ -x $IMGFS ]] || die "imgfs binary not found: $IMGFS (build first, or set IMGFS_BUILD / IMGFS)"
for c in qemu-img qemu-io python3 fusermount3 mountpoint pgrep timeout; do
    command -v "$c" >/dev/null 2>&1 || die "missing command: $c"
done
[[ -e /dev/fuse ]] || die "/dev/fuse is missing"
if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(command -v python3); fi

if [[ -n ${SOAK_WORKDIR:-} ]]; then
    parent=$SOAK_WORKDIR
elif [[ -d /dev/shm && -w /dev/shm ]] && (( $(df -Pk /dev/shm | awk 'NR==2 {print $4}') > 6 * 1024 * 1024 )); then
    parent=/dev/shm   # these VMs reclaim page cache aggressively: keep the images in memory
else
    parent=${TMPDIR:-/tmp}
fi
T=$(mktemp -d "$parent/imgfs-soak.XXXXXX")
SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT" "$T/base" "$T/init" "$T/orig"
say "scratch dir $T, imgfs $IMGFS"

# ------------------------------------------------------------------ images
say "making 4 images of 256 MiB"
# a: 64 KiB clusters, some data already there.
qemu-img create -q -f qcow2 "$SRC/a-plain.qcow2" 256M
qemu-io -f qcow2 -c "write -P 0x41 0 8M" -c "write -P 0x42 100M 4M" -c "write -P 0x43 200M 16M" \
    "$SRC/a-plain.qcow2" >/dev/null
# b: overlay on a backing file outside SOURCE (so it stays writable), random data in its first 160 MiB.
"$PY" - "$T/base/base.raw" "$SEED" <<'PY'
import random, sys
r = random.Random(int(sys.argv[2]))
with open(sys.argv[1], "wb") as f:
    for _ in range(160):
        f.write(r.randbytes(1 << 20))
    f.truncate(256 << 20)
PY
qemu-img convert -q -f raw -O qcow2 "$T/base/base.raw" "$T/base/base.qcow2"
rm -f "$T/base/base.raw"
qemu-img create -q -f qcow2 -b "$T/base/base.qcow2" -F qcow2 "$SRC/b-overlay.qcow2"
qemu-io -f qcow2 -c "write -P 0x62 10M 3M" -c "write -P 0x63 150M 20M" "$SRC/b-overlay.qcow2" >/dev/null
# c: 4 KiB clusters.
qemu-img create -q -f qcow2 -o cluster_size=4096 "$SRC/c-4k.qcow2" 256M
qemu-io -f qcow2 -c "write -P 0x71 1M 2M" -c "write -P 0x72 120M 9M" "$SRC/c-4k.qcow2" >/dev/null
# d: text-like data in its first 224 MiB, every cluster zlib-compressed, extended L2 entries.
"$PY" - "$T/d.raw" "$SEED" <<'PY'
import random, sys
r = random.Random(int(sys.argv[2]) + 7)
words = [b"qcow2", b"cluster", b"refcount", b"snapshot", b"imgfs", b"mount", b"\n", b"backing", b"l2", b"table"]
chunk = b" ".join(r.choice(words) for _ in range(600000))[: 4 << 20]
with open(sys.argv[1], "wb") as f:
    for _ in range(56):
        k = r.randrange(len(chunk))
        f.write(chunk[k:] + chunk[:k])
    f.truncate(256 << 20)
PY
qemu-img convert -q -c -f raw -O qcow2 -o extended_l2=on,cluster_size=64k "$T/d.raw" "$SRC/d-zlib-xl2.qcow2"
rm -f "$T/d.raw"
IMAGES=(a-plain.qcow2 b-overlay.qcow2 c-4k.qcow2 d-zlib-xl2.qcow2)
for img in "${IMAGES[@]}"; do
    qemu-img check -q "$SRC/$img" || die "qemu-img made an unclean $img"
    qemu-img convert -q -O raw "$SRC/$img" "$T/init/$img.raw"   # what the disk reads before the soak
    cp --sparse=always "$SRC/$img" "$T/orig/$img"                # for the offline replay
done
for img in "${IMAGES[@]}"; do
    printf '   %-18s %s\n' "$img" "$(stat -c '%s bytes' "$SRC/$img")"
done

# ------------------------------------------------------------------ mount
"$IMGFS" mount --log "$T/mount.log" "$SRC" "$MNT" || die "imgfs mount failed: $(tail -n 5 "$T/mount.log" 2>/dev/null)"
mountpoint -q "$MNT" || die "$MNT is not a mountpoint after imgfs mount"
DAEMON_PID=$(pgrep -f -- "imgfs mount .*$MNT\$" | head -n 1 || true)
[[ -n $DAEMON_PID ]] || die "cannot find the imgfs daemon's pid"
for img in "${IMAGES[@]}"; do
    [[ -f $MNT/$img/disk.raw ]] || die "$img is not in the mount: $(grep "$img" "$T/mount.log" | tail -n 2)"
done
say "mounted $SRC on $MNT, daemon pid $DAEMON_PID; running $MINUTES minute(s)"

# ------------------------------------------------------------------ the driver
cat >"$T/soak.py" <<'PY'
import errno, json, mmap, os, random, shutil, subprocess, sys, threading, time

T, SRC, MNT, IMGFS = sys.argv[1:5]
MINUTES, PID, SEED = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
IMAGES = sys.argv[8:]
HANG_S = float(os.environ.get("SOAK_HANG_S", "60"))
RSS_GROWTH_MIB = float(os.environ.get("SOAK_RSS_GROWTH_MIB", "64"))
MAX_RATIO = float(os.environ["SOAK_MAX_RATIO"]) if os.environ.get("SOAK_MAX_RATIO") else None
REPLAY = os.environ.get("SOAK_REPLAY", "1") != "0"
MIN_FREE_MIB = int(os.environ.get("SOAK_MIN_FREE_MIB", "2048"))

M = 1 << 20
VSIZE = 256 * M        # every image's size at the start (and after each shrink)
REGION = 96 * M        # each worker owns [k * REGION, (k + 1) * REGION) of its image, k = 0, 1
GAP = (2 * REGION, VSIZE)   # nobody writes here: always reads as it did before the soak
GROW = 64 * M          # resize +64M, later back to 256M --shrink
NWORKERS = 8
DIRECT = {3, 6}        # these workers use O_DIRECT (4 KiB aligned I/O)
CONTROLLERS = {0: [0, 2], 1: [1, 3]}   # worker -> images whose control it drives
SAMPLE_S = 10
MAX_SNAPS = 3

t0 = time.monotonic()
deadline = t0 + MINUTES * 60
stop = threading.Event()
fail_lock = threading.Lock()
failure = []


def now():
    return time.monotonic() - t0


def fail(msg):
    with fail_lock:
        if not failure:
            failure.append("%s (at %.0f s)" % (msg, now()))
            print("soak: ERROR at %.1f s: %s" % (now(), msg), flush=True)
    stop.set()


def finish(verdict):
    with open(os.path.join(T, "result"), "w") as f:
        f.write(verdict + "\n")
    sys.stdout.flush()
    os._exit(0 if verdict == "PASS" else 1)


def mib(n):
    return n / M


def human(n):
    return "%.1f GiB" % (n / (1 << 30)) if n >= (1 << 30) else "%.1f MiB" % mib(n)


def ename(e):
    if isinstance(e, OSError) and e.errno:
        return errno.errorcode.get(e.errno, str(e.errno))
    return type(e).__name__


def rss_kib():
    with open("/proc/%d/status" % PID) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def daemon_alive():
    try:
        with open("/proc/%d/stat" % PID) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wchan(tid):
    try:
        with open("/proc/self/task/%d/wchan" % tid) as f:
            return f.read().strip() or "-"
    except OSError:
        return "?"


def first_diff(a, b):
    n = min(len(a), len(b))
    step = 4096
    for i in range(0, n, step):
        if a[i:i + step] != b[i:i + step]:
            for j in range(i, min(i + step, n)):
                if a[j] != b[j]:
                    return j
    return n


# Random data: slices of one pool at random offsets.
rng0 = random.Random(SEED)
POOL = memoryview(rng0.randbytes(64 * M))
ZEROS = bytes(M)


def init_bytes(img, start, length):
    with open(os.path.join(T, "init", img + ".raw"), "rb") as f:
        f.seek(start)
        d = f.read(length)
    return d + bytes(length - len(d))


class Image:
    def __init__(self, idx, name):
        self.idx, self.name = idx, name
        self.disk = os.path.join(MNT, name, "disk.raw")
        self.ctl = os.path.join(MNT, name, "ctl")
        self.host = os.path.join(SRC, name)
        self.gap = init_bytes(name, GAP[0], GAP[1] - GAP[0])
        self.snaps = []             # names, oldest first
        self.snap_size = {}
        self.snap_seq = 0
        self.grown = False
        self.ext = None             # model of [VSIZE, VSIZE + GROW) while grown
        self.log = []               # for the offline replay: ("w", off, len) / ("sc"|"sd", name) / ("rs", size, shrink)
        self.lock = threading.Lock()
        self.written = 0
        self.ctl_ops = {}

    def record(self, *entry):
        with self.lock:
            self.log.append(entry)

    def size(self):
        return VSIZE + (GROW if self.grown else 0)


images = [Image(i, n) for i, n in enumerate(IMAGES)]


class Worker:
    def __init__(self, w):
        self.w = w
        self.img = images[w % 4]
        self.base = (w // 4) * REGION
        self.direct = w in DIRECT
        self.rng = random.Random(SEED * 1000 + w)
        self.model = bytearray(init_bytes(self.img.name, self.base, REGION))
        self.ops = self.reads = self.writes = self.fsyncs = self.foreign = self.ctl = 0
        self.bytes_w = self.bytes_r = 0
        self.busy_retries = 0
        self.last_progress = time.monotonic()
        self.cur = "starting"
        self.history = []           # last writes: (time, off, len)
        self.tid = 0
        self.thread = threading.Thread(target=self.run, name="w%d" % w, daemon=True)
        if self.direct:
            self.buf = mmap.mmap(-1, M)

    def progress(self):
        self.ops += 1
        self.last_progress = time.monotonic()

    # ---- data I/O
    def pick(self, limit):
        """(offset in region, length): 4 KiB-1 MiB, log-uniform; half of them unaligned."""
        n = int(4096 * 2 ** (self.rng.random() * 8))
        if self.direct or self.rng.random() < 0.5:
            n = max(4096, n & ~4095)
            off = self.rng.randrange(0, (limit - n) // 4096 + 1) * 4096
        else:
            n = self.rng.randrange(max(1, n // 2), n + 1)
            off = self.rng.randrange(0, limit - n + 1)
        return off, n

    def pwrite(self, fd, data, off):
        if self.direct:
            self.buf[:len(data)] = data
            views = [memoryview(self.buf)[:len(data)]]
            done = 0
            while done < len(data):
                k = os.pwritev(fd, [v[done:] for v in views], off + done)
                if k <= 0:
                    raise OSError(errno.EIO, "pwritev wrote %d" % k)
                done += k
            return
        mv = memoryview(data)
        done = 0
        while done < len(data):
            k = os.pwrite(fd, mv[done:], off + done)
            if k <= 0:
                raise OSError(errno.EIO, "pwrite wrote %d" % k)
            done += k

    def pread(self, fd, n, off):
        if self.direct:
            k = os.preadv(fd, [memoryview(self.buf)[:n]], off)
            if k != n:
                raise OSError(errno.EIO, "preadv read %d of %d bytes at %d" % (k, n, off))
            return bytes(self.buf[:n])
        out = bytearray()
        while len(out) < n:
            d = os.pread(fd, n - len(out), off + len(out))
            if not d:
                raise OSError(errno.EIO, "pread hit the end at %d (wanted %d bytes at %d)" % (off + len(out), n, off))
            out += d
        return bytes(out)

    def do_write(self, fd):
        off, n = self.pick(REGION)
        p = self.rng.randrange(0, len(POOL) - n)
        data = POOL[p:p + n]
        self.cur = "write %d bytes at %d" % (n, self.base + off)
        self.pwrite(fd, data, self.base + off)
        self.model[off:off + n] = data
        self.img.record("w", self.base + off, n)
        self.history = (self.history + [(round(now(), 1), self.base + off, n)])[-200:]
        self.writes += 1
        self.bytes_w += n
        with self.img.lock:
            self.img.written += n

    def do_read(self, fd):
        off, n = self.pick(REGION)
        self.cur = "read %d bytes at %d" % (n, self.base + off)
        got = self.pread(fd, n, self.base + off)
        want = self.model[off:off + n]
        if got != want:
            j = first_diff(got, want)
            bad = self.base + off + j
            near = [h for h in self.history if h[1] <= bad < h[1] + h[2]][-5:]
            fail("data mismatch: worker %d, %s, %s: first differing byte at disk offset %d "
                 "(got %s, expected %s); last writes covering it (time, offset, length): %s"
                 % (self.w, self.img.name, self.cur, bad, got[j:j + 8].hex(), bytes(want[j:j + 8]).hex(), near))
            return
        self.reads += 1
        self.bytes_r += n

    def do_foreign_read(self, fd):
        """The neighbour's region (unverified, it writes there) or the gap (verified)."""
        if self.rng.random() < 0.5:
            nb = REGION - self.base
            off, n = self.pick(REGION)
            self.cur = "read neighbour %d bytes at %d" % (n, nb + off)
            self.pread(fd, n, nb + off)
        else:
            off, n = self.pick(GAP[1] - GAP[0])
            self.cur = "read gap %d bytes at %d" % (n, GAP[0] + off)
            got = self.pread(fd, n, GAP[0] + off)
            if got != self.img.gap[off:off + n]:
                j = first_diff(got, self.img.gap[off:off + n])
                fail("data mismatch in the untouched range: worker %d, %s, %s: disk offset %d got %s expected %s"
                     % (self.w, self.img.name, self.cur, GAP[0] + off + j, got[j:j + 8].hex(),
                        self.img.gap[off + j:off + j + 8].hex()))
                return
        self.foreign += 1
        self.bytes_r += n

    def run(self):
        self.tid = threading.get_native_id()
        try:
            flags = os.O_RDWR | (os.O_DIRECT if self.direct else 0)
            fd = os.open(self.img.disk, flags)
            ctl_images = [images[i] for i in CONTROLLERS.get(self.w, [])]
            next_ctl = time.monotonic() + self.rng.uniform(0.5, 2.0)
            k = 0
            while not stop.is_set() and time.monotonic() < deadline:
                if ctl_images and time.monotonic() >= next_ctl:
                    Control(self, ctl_images[k % len(ctl_images)]).one()
                    k += 1
                    self.ctl += 1
                    next_ctl = time.monotonic() + self.rng.uniform(0.5, 2.0)
                    self.progress()
                    continue
                r = self.rng.random()
                if r < 0.45:
                    self.do_write(fd)
                elif r < 0.88:
                    self.do_read(fd)
                elif r < 0.96:
                    self.do_foreign_read(fd)
                else:
                    self.cur = "fsync" if r < 0.98 else "fdatasync"
                    (os.fsync if r < 0.98 else os.fdatasync)(fd)
                    self.fsyncs += 1
                self.progress()
            if not stop.is_set():
                self.cur = "final fsync"
                os.fsync(fd)
            os.close(fd)
            self.cur = "done"
        except Exception as e:  # noqa: BLE001 -- any error ends the soak
            fail("worker %d on %s: %s failed: %s %s" % (self.w, self.img.name, self.cur, ename(e), e))


class Control:
    """One control operation on an image, by ctl or by attribute, checked."""

    def __init__(self, worker, img):
        self.w, self.img, self.rng = worker, img, worker.rng

    def count(self, what):
        self.img.ctl_ops[what] = self.img.ctl_ops.get(what, 0) + 1

    def read_ctl(self):
        with open(self.img.ctl) as f:
            return f.read()

    def retry_busy(self, what, fn):
        t = time.monotonic()
        while True:
            try:
                return fn()
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() - t > 2 * HANG_S:
                    raise
                self.w.busy_retries += 1
                self.w.cur = "%s (EBUSY, retrying)" % what
                time.sleep(0.2)

    def command(self, line, attr=None, value=None, background=False):
        """Runs `line` through ctl, or the attribute; the state must say ok
        (for a background command: that it is running or ended ok)."""
        if attr is not None and self.rng.random() < 0.5:
            text = "%s=%s" % (attr, value)
            self.w.cur = "setxattr %s %s" % (self.img.name, text)
            self.retry_busy(self.w.cur, lambda: os.setxattr(self.img.disk, attr, value.encode()))
        else:
            text = line
            self.w.cur = "ctl %s: %s" % (self.img.name, line)

            def write():
                fd = os.open(self.img.ctl, os.O_WRONLY)
                try:
                    os.write(fd, (line + "\n").encode())
                finally:
                    os.close(fd)
            self.retry_busy(self.w.cur, write)
        state = self.read_ctl()
        if background and ("last: %s: ok" % text in state or "current: running: " + text in state):
            return
        if ("last: %s: ok" % text) not in state:
            raise RuntimeError("%s: ctl does not say ok: %r" % (text, state))

    def check_snapshots(self):
        raw = os.getxattr(self.img.disk, "user.imgfs.snapshots").decode()
        got = [s for s in raw.split("\n") if s]
        if got != self.img.snaps:
            raise RuntimeError("user.imgfs.snapshots is %r, expected %r" % (got, self.img.snaps))
        for s in self.img.snaps:
            st = os.stat(os.path.join(MNT, self.img.name, "snapshots", s + ".raw"))
            if st.st_size != self.img.snap_size[s]:
                raise RuntimeError("snapshots/%s.raw is %d bytes, expected %d" % (s, st.st_size, self.img.snap_size[s]))

    def check_size(self):
        size = os.stat(self.img.disk).st_size
        if size != self.img.size():
            raise RuntimeError("disk.raw is %d bytes, expected %d" % (size, self.img.size()))

    def one(self):
        try:
            self.run_one()
        except Exception as e:  # noqa: BLE001 -- any error ends the soak
            fail("control by worker %d on %s: %s failed: %s %s" % (self.w.w, self.img.name, self.w.cur, ename(e), e))

    def run_one(self):
        img = self.img
        choices = [("resize", 2), ("check", 1), ("flush", 1), ("attrs", 1)]
        if len(img.snaps) < MAX_SNAPS:
            choices.append(("snapshot create", 3))
        if img.snaps:
            choices += [("snapshot delete", 3 if len(img.snaps) >= MAX_SNAPS else 1), ("snapshot read", 1)]
        if img.grown:
            choices.append(("grown area io", 2))
        what = self.rng.choices([c[0] for c in choices], [c[1] for c in choices])[0]
        getattr(self, what.replace(" ", "_"))()
        self.count(what)

    def snapshot_create(self):
        img = self.img
        img.snap_seq += 1
        name = "soak%d" % img.snap_seq
        self.command("snapshot create " + name, "user.imgfs.snapshot.create", name)
        img.snaps.append(name)
        img.snap_size[name] = img.size()
        img.record("sc", name)
        self.check_snapshots()

    def snapshot_delete(self):
        img = self.img
        name = img.snaps[0] if self.rng.random() < 0.7 else self.rng.choice(img.snaps)
        self.command("snapshot delete " + name, "user.imgfs.snapshot.delete", name)
        img.snaps.remove(name)
        del img.snap_size[name]
        img.record("sd", name)
        self.check_snapshots()

    def snapshot_read(self):
        """A snapshot view reads the untouched range as it always was."""
        img = self.img
        name = self.rng.choice(img.snaps)
        path = os.path.join(MNT, img.name, "snapshots", name + ".raw")
        off = self.rng.randrange(0, (GAP[1] - GAP[0]) // 4096 - 256) * 4096
        self.w.cur = "read snapshots/%s.raw at %d" % (name, GAP[0] + off)
        with open(path, "rb") as f:
            f.seek(GAP[0] + off)
            got = f.read(M)
        if got != img.gap[off:off + M]:
            raise RuntimeError("snapshots/%s.raw differs from the untouched range at %d"
                               % (name, GAP[0] + off + first_diff(got, img.gap[off:off + M])))

    def resize(self):
        img = self.img
        fd = os.open(img.disk, os.O_RDONLY)
        try:
            if not img.grown:
                self.command("resize +64M", "user.imgfs.resize", "+64M")
                img.grown, img.ext = True, bytearray(GROW)
                img.record("rs", VSIZE + GROW, False)
                self.check_size()
                # The new bytes read as zeros (also where a shrink cut data off before).
                for off in range(VSIZE, VSIZE + GROW, M):
                    self.w.cur = "read the grown area at %d" % off
                    got = os.pread(fd, M, off)
                    if got != ZEROS:
                        raise RuntimeError("%s: after resize +64M, %d bytes at %d do not read as zeros"
                                           % (img.name, M, off))
            else:
                self.command("resize 256M --shrink", "user.imgfs.resize", "256M,shrink")
                img.grown, img.ext = False, None
                img.record("rs", VSIZE, True)
                self.check_size()
        finally:
            os.close(fd)

    def grown_area_io(self):
        """Writes into [VSIZE, VSIZE + GROW), read back; a shrink throws it away."""
        img = self.img
        fd = os.open(img.disk, os.O_RDWR)
        try:
            for _ in range(self.rng.randrange(1, 5)):
                n = self.rng.randrange(4096, M)
                off = self.rng.randrange(0, GROW - n)
                p = self.rng.randrange(0, len(POOL) - n)
                self.w.cur = "write %d bytes into the grown area at %d" % (n, VSIZE + off)
                self.w.pwrite(fd, POOL[p:p + n], VSIZE + off)
                img.ext[off:off + n] = POOL[p:p + n]
                img.record("w", VSIZE + off, n)
                with img.lock:
                    img.written += n
            off = self.rng.randrange(0, GROW - M)
            got = self.w.pread(fd, M, VSIZE + off)
            if got != img.ext[off:off + M]:
                raise RuntimeError("%s: grown area differs at %d" % (img.name, VSIZE + off + first_diff(got, img.ext[off:off + M])))
            if self.rng.random() < 0.5:
                os.fsync(fd)
        finally:
            os.close(fd)

    def check(self):
        img = self.img
        self.command("check", background=True)
        t = time.monotonic()
        while True:
            state = self.read_ctl()
            if "current: idle" in state:
                break
            if time.monotonic() - t > 3 * HANG_S:
                raise RuntimeError("check still running after %d s: %r" % (3 * HANG_S, state))
            self.w.cur = "waiting for the check of %s (%s)" % (img.name, state.strip().replace("\n", "; "))
            time.sleep(0.1)
        if "last: check: ok" not in state:
            raise RuntimeError("%s: check: %r" % (img.name, state))

    def flush(self):
        self.command("flush")

    def attrs(self):
        img = self.img
        for a in ("dirty", "corrupt", "read_only"):
            v = os.getxattr(img.disk, "user.imgfs." + a).decode()
            if v != "0":
                raise RuntimeError("%s: user.imgfs.%s is %r" % (img.name, a, v))
        vs = int(os.getxattr(img.disk, "user.imgfs.virtual_size"))
        if vs != img.size():
            raise RuntimeError("%s: user.imgfs.virtual_size %d, expected %d" % (img.name, vs, img.size()))
        self.check_size()
        self.check_snapshots()



# ---------------------------------------------------------------- run
workers = [Worker(w) for w in range(NWORKERS)]
samples = []   # (t, rss KiB, [(size, allocated)], [ops per worker])


def sample():
    try:
        rss = rss_kib()
    except OSError:
        fail("the imgfs daemon (pid %d) is gone" % PID)
        return
    files = []
    for img in images:
        st = os.stat(img.host)
        files.append((st.st_size, st.st_blocks * 512))
    vfs = os.statvfs(T)
    free = vfs.f_bavail * vfs.f_frsize
    if free < MIN_FREE_MIB * M:
        fail("the scratch file system has %s left (SOAK_MIN_FREE_MIB=%d); image files: %s"
             % (human(free), MIN_FREE_MIB, ", ".join("%s %s" % (i.name, human(f[0])) for i, f in zip(images, files))))
    ops = [w.ops for w in workers]
    prev = samples[-1][3] if samples else [0] * NWORKERS
    samples.append((now(), rss, files, ops))
    print("[%4.0fs] rss %6.1f MiB | %s | ops/10s %s | total %d" % (
        now(), rss / 1024.0,
        " ".join("%s %.1f/%.1f" % (img.name[0], mib(f[0]), mib(f[1])) for img, f in zip(images, files)),
        " ".join(str(o - p) for o, p in zip(ops, prev)), sum(ops)), flush=True)


print("workers: %d (2 per image, each owning 96 MiB), O_DIRECT: %s, control: %s; sample line: "
      "file size/allocated MiB per image (a b c d)" % (
          NWORKERS, " ".join("w%d" % w for w in sorted(DIRECT)),
          ", ".join("w%d -> %s" % (w, "+".join(images[i].name[0] for i in ims)) for w, ims in CONTROLLERS.items())),
      flush=True)
sample()
for w in workers:
    w.thread.start()
next_sample = time.monotonic() + SAMPLE_S
while any(w.thread.is_alive() for w in workers):
    time.sleep(0.5)
    if stop.is_set():
        break
    if not daemon_alive():
        fail("the imgfs daemon (pid %d) died" % PID)
        break
    t = time.monotonic()
    for w in workers:
        if w.thread.is_alive() and t - w.last_progress > HANG_S:
            fail("hang: worker %d on %s made no progress for %.0f s, stuck in: %s"
                 % (w.w, w.img.name, t - w.last_progress, w.cur))
    if stop.is_set():
        break
    if t >= next_sample:
        next_sample += SAMPLE_S
        sample()
    if t > deadline + 2 * HANG_S:
        fail("workers did not stop %d s after the deadline: %s" % (
            2 * HANG_S, "; ".join("w%d: %s" % (w.w, w.cur) for w in workers if w.thread.is_alive())))
        break

stop.set()
join_until = time.monotonic() + 15
for w in workers:
    w.thread.join(timeout=max(0.1, join_until - time.monotonic()))
if failure:
    stuck = ["w%d: %s (kernel: %s)" % (w.w, w.cur, wchan(w.tid)) for w in workers if w.thread.is_alive()]
    if stuck:
        print("threads still stuck: " + "; ".join(stuck), flush=True)
    finish("FAIL: " + failure[0])
duration = now()
sample()

# ---------------------------------------------------------------- after the run
for img in images:
    with open(img.ctl) as f:
        state = f.read()
    if "current: idle" not in state:
        finish("FAIL: %s: a control command is still running at the end: %r" % (img.name, state))

print("unmounting", flush=True)
try:
    r = subprocess.run([IMGFS, "umount", MNT], capture_output=True, text=True, timeout=2 * HANG_S)
except subprocess.TimeoutExpired:
    finish("FAIL: imgfs umount did not return within %d s" % (2 * HANG_S))
if r.returncode != 0:
    finish("FAIL: imgfs umount exit %d: %s" % (r.returncode, (r.stdout + r.stderr).strip()))
for _ in range(300):
    if not daemon_alive():
        break
    time.sleep(0.1)
else:
    finish("FAIL: the daemon is still running 30 s after imgfs umount")


def run(cmd, timeout=600, **kw):
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)


problems = []
for img in images:
    r = run(["qemu-img", "check", img.host])
    if r.returncode != 0:
        problems.append("qemu-img check %s: exit %d: %s" % (img.name, r.returncode, (r.stdout + r.stderr).strip()))
        continue
    info = json.loads(run(["qemu-img", "info", "--output=json", img.host]).stdout)
    if info["virtual-size"] != img.size():
        problems.append("%s: virtual size %d, expected %d" % (img.name, info["virtual-size"], img.size()))
    names = [s["name"] for s in info.get("snapshots", [])]
    if names != img.snaps:
        problems.append("%s: qemu-img lists snapshots %s, expected %s" % (img.name, names, img.snaps))
    out = os.path.join(T, "final.raw")
    r = run(["qemu-img", "convert", "-O", "raw", img.host, out])
    if r.returncode != 0:
        problems.append("qemu-img convert %s: %s" % (img.name, r.stderr.strip()))
        continue
    with open(out, "rb") as f:
        for w in workers:
            if w.img is not img:
                continue
            f.seek(w.base)
            got = f.read(REGION)
            if got != w.model:
                j = first_diff(got, w.model)
                problems.append("%s: worker %d's region differs from its model at disk offset %d (got %s, expected %s)"
                                % (img.name, w.w, w.base + j, got[j:j + 8].hex(), bytes(w.model[j:j + 8]).hex()))
        f.seek(GAP[0])
        got = f.read(GAP[1] - GAP[0])
        if got != img.gap:
            problems.append("%s: the untouched range differs at %d" % (img.name, GAP[0] + first_diff(got, img.gap)))
        if img.grown:
            got = f.read(GROW)
            if got != img.ext:
                problems.append("%s: the grown area differs at %d" % (img.name, VSIZE + first_diff(got, img.ext)))
    os.unlink(out)
    print("   %s: qemu-img check clean, %d snapshot(s), content as modelled" % (img.name, len(names)), flush=True)


def replay(img):
    """The same writes, snapshots and resizes on a copy of the original, by qemu: its file size."""
    path = os.path.join(T, "replay-" + img.name)
    shutil.copyfile(os.path.join(T, "orig", img.name), path)
    batch = []

    def flush_writes():
        if not batch:
            return
        cmds = "".join("write -P 0x%02x %d %d\n" % (1 + i % 254, off, n) for i, (off, n) in enumerate(batch)) + "flush\n"
        r = run(["qemu-io", "-f", "qcow2", path], input=cmds, timeout=3600)
        wrote = r.stdout.count("wrote ")
        if r.returncode != 0 or wrote != len(batch):
            raise RuntimeError("qemu-io: %d of %d writes done: %s" % (wrote, len(batch), (r.stderr or r.stdout)[-300:]))
        batch.clear()

    for e in img.log:
        if e[0] == "w":
            batch.append((e[1], e[2]))
            continue
        flush_writes()
        if e[0] == "sc":
            cmd = ["qemu-img", "snapshot", "-c", e[1], path]
        elif e[0] == "sd":
            cmd = ["qemu-img", "snapshot", "-d", e[1], path]
        else:
            cmd = ["qemu-img", "resize", "-q"] + (["--shrink"] if e[2] else []) + [path, str(e[1])]
        r = run(cmd)
        if r.returncode != 0:
            raise RuntimeError("%s: %s" % (" ".join(cmd[:3]), r.stderr.strip()))
    flush_writes()
    r = run(["qemu-img", "check", path])
    size = os.stat(path).st_size
    os.unlink(path)
    return size, r.returncode


qemu_size = {}
if REPLAY:
    print("replaying the operations with qemu-io/qemu-img on copies of the original images", flush=True)
    for img in images:
        try:
            t = time.monotonic()
            qemu_size[img.name], rc = replay(img)
            print("   %s: %d operations, qemu leaves %s (its check exit %d) in %.0f s"
                  % (img.name, len(img.log), human(qemu_size[img.name]), rc, time.monotonic() - t), flush=True)
        except Exception as e:  # noqa: BLE001 -- the replay is a measurement, not the test
            print("   %s: replay failed (not counted as a soak failure): %s" % (img.name, e), flush=True)

# ---------------------------------------------------------------- summary
half = duration / 2
rss = [(s[0], s[1] / 1024.0) for s in samples]
first_half = [r for t, r in rss if t <= half] or [rss[0][1]]
second_half = [r for t, r in rss if t > half] or [rss[-1][1]]
growth = max(second_half) - max(first_half)
tot = lambda attr: sum(getattr(w, attr) for w in workers)  # noqa: E731
ctl_all = {}
for img in images:
    for k, v in img.ctl_ops.items():
        ctl_all[k] = ctl_all.get(k, 0) + v

print()
print("soak summary")
print("  duration         %.0f s (%d min), %d samples" % (duration, MINUTES, len(samples)))
print("  ops              %d: %d writes, %d verified reads, %d other reads, %d fsyncs, %d control"
      % (tot("ops"), tot("writes"), tot("reads"), tot("foreign"), tot("fsyncs"), tot("ctl")))
print("  control          %s; EBUSY retries %d" % (", ".join("%s %d" % kv for kv in sorted(ctl_all.items())), tot("busy_retries")))
print("  bytes            written %s, read %s" % (human(tot("bytes_w")), human(tot("bytes_r"))))
print("  ops per worker   %s" % " ".join("w%d:%d" % (w.w, w.ops) for w in workers))
print("  daemon RSS MiB   first %.1f, min %.1f, max %.1f, last %.1f; max first half %.1f, max second half %.1f, "
      "growth %+.1f (limit %.0f)" % (rss[0][1], min(r for _, r in rss), max(r for _, r in rss), rss[-1][1],
                                     max(first_half), max(second_half), growth, RSS_GROWTH_MIB))
print("  %-17s %9s %11s %11s %11s %8s %11s %9s" % ("image", "virtual", "file size", "allocated", "written",
                                                  "file/virt", "qemu replay", "imgfs/qemu"))
ratio_fail = []
for img in images:
    st = os.stat(img.host)
    virt = img.size()
    q = qemu_size.get(img.name)
    rq = st.st_size / q if q else None
    print("  %-17s %9s %11s %11s %11s %8.2f %11s %9s" % (
        img.name, human(virt), human(st.st_size), human(st.st_blocks * 512), human(img.written),
        st.st_size / virt, human(q) if q else "-", "%.2f" % rq if rq else "-"))
    if MAX_RATIO is not None:
        r = rq if REPLAY else st.st_size / virt
        if r is None:
            ratio_fail.append("%s: no qemu replay to compare with" % img.name)
        elif r > MAX_RATIO:
            ratio_fail.append("%s: file %s is %.2fx %s (SOAK_MAX_RATIO %.2f)" % (
                img.name, human(st.st_size), r, "what qemu leaves" if REPLAY else "the virtual size", MAX_RATIO))
print("  file size over time (MiB, every 10 s):")
for i, img in enumerate(images):
    print("    %s %s" % (img.name[0], " ".join("%.0f" % mib(s[2][i][0]) for s in samples)))
print("  RSS over time (MiB): %s" % " ".join("%.0f" % r for _, r in rss))
print()

if problems:
    for p in problems:
        print("problem: " + p)
    finish("FAIL: " + problems[0])
if growth > RSS_GROWTH_MIB:
    finish("FAIL: daemon RSS grew by %.1f MiB in the second half (max %.1f MiB vs %.1f MiB in the first half; "
           "limit SOAK_RSS_GROWTH_MIB=%.0f)" % (growth, max(second_half), max(first_half), RSS_GROWTH_MIB))
if ratio_fail:
    finish("FAIL: " + ratio_fail[0])
finish("PASS")
PY

"$PY" "$T/soak.py" "$T" "$SRC" "$MNT" "$IMGFS" "$MINUTES" "$DAEMON_PID" "$SEED" "${IMAGES[@]}" &
DRIVER_PID=$!
# Until it gives its verdict: after a hang its stuck threads keep it from
# being reaped until the daemon is gone, so it is not waited for.
while running "$DRIVER_PID" && [[ ! -s $T/result ]]; do sleep 1; done
if [[ -s $T/result ]]; then
    VERDICT=$(cat "$T/result")
else
    rc=0
    wait "$DRIVER_PID" || rc=$?
    VERDICT="FAIL: the python driver died (exit $rc)"
fi
DRIVER_PID=""
[[ $VERDICT == PASS ]] && exit 0
exit 1
