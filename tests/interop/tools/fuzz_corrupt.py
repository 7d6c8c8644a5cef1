#!/usr/bin/env python3
"""fuzz_corrupt.py BUILD_DIR ITERATIONS SEED WORKDIR: damage qcow2 images
made by qemu-img (random bytes, bit flips, runs of 0/0xff, truncation) and
run the imgfs tools on each: info, check, snapshot -l, a full read, writes,
check -r all, snapshot -c, resize. A finding is a crash (signal, sanitizer
report), a hang (60 s), or a file grown past 2 GiB (growth toward a garbage
offset). Refusals and errors are fine: that is what damage should get.
Deterministic for a given SEED. Exit 1 on any finding, with its image kept
in WORKDIR."""
import os, random, shutil, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from damage import damage
B = sys.argv[1]            # build dir
N = int(sys.argv[2])
seed0 = int(sys.argv[3])
W = sys.argv[4]
os.makedirs(W, exist_ok=True)
IMGFS = B + "/mounttool/imgfs"
CAT = B + "/tests/interop/imgcat"
WR = B + "/tests/interop/imgwrite"
import resource
def lim():  # a file past 2 GiB is a finding (SIGXFSZ)
    resource.setrlimit(resource.RLIMIT_FSIZE, (2048 << 20, 2048 << 20))
def sh(*a, **k): return subprocess.run(list(a), capture_output=True, errors="replace", text=True, timeout=k.get("timeout", 30), preexec_fn=lim)
def mk(name, opts, cmds, snaps=(), bitmaps=()):
    p = f"{W}/seed-{name}.qcow2"
    if os.path.exists(p): return p
    sh("qemu-img", "create", "-q", "-f", "qcow2", "-o", opts, p, "4M")
    for b in bitmaps: sh("qemu-img", "bitmap", "--add", p, b)
    for i, c in enumerate(cmds):
        sh("qemu-io", "-f", "qcow2", "-c", c, p)
        if i < len(snaps): sh("qemu-img", "snapshot", "-c", snaps[i], p)
    if not os.path.exists(p): sys.exit(f"fuzz_corrupt: could not make the seed image {p}")
    return p
seeds = [
    mk("plain", "cluster_size=512", ["write -P 1 0 100k", "write -P 2 1M 300k", "write -z 2M 64k"], ["s1", "s2"], ["bm"]),
    mk("l2", "cluster_size=16k,extended_l2=on", ["write -P 3 1000 20000", "write -P 4 3M 70000"], ["a"]),
    mk("v2", "compat=0.10,cluster_size=1k", ["write -P 5 0 4M"], ["x"]),
    mk("rc1", "cluster_size=1k,refcount_bits=1", ["write -P 8 0 2M"], ["q"]),
    mk("rc64", "cluster_size=2k,refcount_bits=64,lazy_refcounts=on", ["write -P 6 77 5000", "write -P 7 2M 1M"], ["y", "z"]),
]
zp = f"{W}/seed-zstd.qcow2"
if not os.path.exists(zp):
    raw = f"{W}/z.raw"
    with open(raw, "wb") as f: f.write((b"some text that compresses " * 200000)[:4 << 20])
    sh("qemu-img", "convert", "-c", "-f", "raw", "-O", "qcow2", "-o", "compression_type=zstd,cluster_size=4k", raw, zp)
seeds.append(zp)
findings = 0
ONLY = int(os.environ.get('ONLY', '-1'))  # ONLY=N replays iteration N, printing every command
for it in range(N):
    if ONLY >= 0 and it != ONLY: continue
    rnd = random.Random(seed0 * 100000 + it)
    src = rnd.choice(seeds)
    img = f"{W}/t.qcow2"
    shutil.copy(src, img)
    data = damage(bytearray(open(img, "rb").read()), rnd)
    open(img, "wb").write(bytes(data))
    keep = bytes(data)
    runs = [[IMGFS, "info", img], [IMGFS, "info", "--output=json", img], [IMGFS, "check", img],
            [IMGFS, "snapshot", "-l", img], [CAT, img],
            [WR, img, str(rnd.randrange(4 << 20)), "0x33", str(rnd.randint(1, 200000))],
            [IMGFS, "check", "-r", "all", img], [CAT, img], [WR, img, "12345", "0x44", "70000"], [IMGFS, "check", img],
            [IMGFS, "snapshot", "-c", "new", img], [IMGFS, "resize", img, "+1M"], [CAT, img]]
    for cmd in runs:
        try:
            r = sh(*cmd, timeout=60)
        except subprocess.TimeoutExpired:
            findings += 1
            open(f"{W}/hang-{it}.qcow2", "wb").write(keep)
            print(f"it {it}: HANG {cmd[0].split('/')[-1]} {cmd[1:2]} seed={os.path.basename(src)}", flush=True)
            break
        if ONLY >= 0: print(r.returncode, cmd[0].split('/')[-1], cmd[1:], r.stderr[-300:])  # replaying one
        bad = r.returncode < 0 or r.returncode >= 128 or "Sanitizer" in r.stderr or "runtime error" in r.stderr
        if bad:
            findings += 1
            open(f"{W}/crash-{it}.qcow2", "wb").write(keep)
            print(f"it {it}: CRASH rc={r.returncode} {cmd[0].split('/')[-1]} {' '.join(cmd[1:-1])} seed={os.path.basename(src)}\n{r.stderr[-1500:]}", flush=True)
            break
print(f"done: {N} iterations, {findings} findings")
sys.exit(1 if findings else 0)
