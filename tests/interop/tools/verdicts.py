#!/usr/bin/env python3
"""verdicts.py BUILD_DIR COUNT SEED WORKDIR: damages qcow2 images that
qemu-img made (tools/damage.py: bytes, bit flips, runs, truncation) and
holds imgfs to qemu-img check's verdict on each:
  - `imgfs check` finds at least what `qemu-img check` finds: an image
    qemu calls corrupt or cannot check is never called clean or merely
    leaking (imgfs may refuse to open one qemu calls corrupt, or call
    corrupt one qemu cannot open), one that leaks is never called clean;
  - `imgfs check -r all` exits 0 only where qemu-img check then finds the
    image clean;
  - a writing command (bitmap --add, amend refcount_bits, snapshot -c,
    resize) never leaves the image worse for qemu-img check than it found it
    (clean < leaks < corrupt < cannot be checked).
Deterministic for a SEED; prints each finding with the seed that replays it
(ONLY=seed). Exit 1 on any finding."""
import os, random, shutil, subprocess, sys
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from damage import damage

B, N, SEED0, W = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
IMGFS = B + "/mounttool/imgfs"
ONLY = os.environ.get("ONLY")
os.makedirs(W, exist_ok=True)


def run(args, timeout=60):
    try:
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        return p.returncode, p.stdout.decode(errors="replace")
    except subprocess.TimeoutExpired:
        return "timeout", ""


def qemu(*a):
    subprocess.run(["qemu-img", *a], check=True, stdout=subprocess.DEVNULL)


def qio(img, cmd):
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", cmd, img], check=True, stdout=subprocess.DEVNULL)


# Rank of a qemu-img check exit code: 0 clean, 3 leaks, 2 corrupt, else it
# could not check the image at all.
RANK = {0: 0, 3: 1, 2: 2}


def rank(rc):
    return RANK.get(rc, 3)


def qcheck(img):
    return run(["qemu-img", "check", "-f", "qcow2", img])[0]


def make_bases():
    bases = []
    for name, opts, snaps in [("plain", "cluster_size=65536", False), ("small", "cluster_size=512", True),
                              ("snaps", "cluster_size=4096", True), ("l2ext", "extended_l2=on,cluster_size=65536", False)]:
        img = os.path.join(W, "base-" + name + ".qcow2")
        qemu("create", "-q", "-f", "qcow2", "-o", opts, img, "4M")
        qio(img, "write -P 0x11 0 1M")
        if snaps:
            qemu("snapshot", "-c", "s1", img)
            qio(img, "write -P 0x22 512k 512k")
            qemu("bitmap", "--add", img, "b0")
            qemu("snapshot", "-c", "s2", img)
        qio(img, "write -z 2M 64k")
        bases.append(img)
    return bases


WRITERS = [["bitmap", "--add", "{img}", "bnew"], ["amend", "-o", "refcount_bits=1", "{img}"],
           ["amend", "-o", "refcount_bits=64", "{img}"], ["snapshot", "-c", "snew", "{img}"],
           ["resize", "{img}", "+1M"]]


def main():
    bases = make_bases()
    findings = 0
    for seed in range(SEED0, SEED0 + N):
        if ONLY and str(seed) != ONLY:
            continue
        rnd = random.Random(seed)
        base = rnd.choice(bases)
        img = os.path.join(W, "s%d.qcow2" % seed)
        data = damage(bytearray(open(base, "rb").read()), rnd, hot_sizes=(512, 4096, 65536))
        open(img, "wb").write(data)
        q = qcheck(img)
        rc, out = run([IMGFS, "check", "-f", "qcow2", img])
        problems = []
        if rc == "timeout":
            problems.append("imgfs check hangs")
        elif rank(rc) < rank(q) and not (rank(q) >= 2 and rank(rc) >= 2):
            problems.append("imgfs check exit %s, qemu-img check exit %s: %s" % (rc, q, out.strip().splitlines()[-1:] ))
        for cmd in WRITERS:
            w = img + ".w"
            shutil.copy(img, w)
            before = rank(qcheck(w))
            rc, out = run([IMGFS] + [a.format(img=w) for a in cmd])
            after = rank(qcheck(w))
            if rc == "timeout" or after > before:
                problems.append("imgfs %s (exit %s) left it worse for qemu-img check: %d -> %d: %s" %
                                (" ".join(cmd[:-1] if cmd[-1] == "{img}" else cmd), rc, before, after,
                                 out.strip().splitlines()[-1:]))
            os.remove(w)
        r = img + ".r"
        shutil.copy(img, r)
        rc, out = run([IMGFS, "check", "-r", "all", r])
        if rc == 0 and qcheck(r) != 0:
            problems.append("check -r all exits 0, qemu-img check then exits %s" % qcheck(r))
        os.remove(r)
        for p in problems:
            print("seed %d (%s): %s" % (seed, os.path.basename(base), p))
        if problems:
            findings += 1
        else:
            os.remove(img)
    print("%d of %d damaged images with findings" % (findings, N if not ONLY else 1))
    return 1 if findings else 0


sys.exit(main())
