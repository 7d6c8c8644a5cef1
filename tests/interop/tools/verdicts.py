#!/usr/bin/env python3
"""verdicts.py BUILD_DIR COUNT SEED WORKDIR: damages qcow2 images that
qemu-img made (tools/damage.py: bytes, bit flips, runs, truncation) and
holds imgfs to qemu-img check's verdict on each:
  - `imgfs check` exits as `qemu-img check` does (0 clean, 3 leaks,
    2 corrupt, 1 could not check), save that it also finds the leaks past
    the end of the file that qemu-img does not look for;
  - `imgfs check -r all` exits 0 only where qemu-img check then finds the
    image clean;
  - a writing command (bitmap --add, amend refcount_bits, snapshot -c,
    resize) never leaves the image worse for qemu-img check than it found it
    (clean < leaks < corrupt < cannot be checked).
Deterministic for a SEED; prints each finding with the seed that replays it
(ONLY=seed). Exit 1 on any finding."""
import multiprocessing, os, random, shutil, subprocess, sys
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


def differs(rc, q, out, qout):
    """Whether imgfs check's exit code is not qemu-img check's. Two
    differences are by design: imgfs also counts refcounts past the end of
    the file as leaks (qemu-img reads none there) and says so on each; and
    where qemu-img's check fails on its own errors (a refcount block it
    cannot read: exit 1), imgfs finishes it and reports corruption (2)."""
    if rc == q:
        return False
    if q == 1 and rc == 2 and "internal errors have occurred during the check" in qout:
        return False
    leaks = [l for l in out.splitlines() if l.startswith("Leaked cluster")]
    return not (q == 0 and rc == 3 and leaks and all(l.endswith("(past the end of the file)") for l in leaks))


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


def judge(seed, bases):
    """The findings on the image that SEED damages (a list of lines)."""
    rnd = random.Random(seed)
    base = rnd.choice(bases)
    img = os.path.join(W, "s%d.qcow2" % seed)
    data = damage(bytearray(open(base, "rb").read()), rnd, hot_sizes=(512, 4096, 65536))
    open(img, "wb").write(data)
    q, qout = run(["qemu-img", "check", "-f", "qcow2", img])
    rc, out = run([IMGFS, "check", "-f", "qcow2", img])
    problems = []
    if rc == "timeout":
        problems.append("imgfs check hangs")
    elif differs(rc, q, out, qout):
        problems.append("imgfs check exit %s, qemu-img check exit %s: %s" % (rc, q, out.strip().splitlines()[-1:]))
    for cmd in WRITERS:
        w = img + ".w"
        shutil.copy(img, w)  # the same bytes: qemu's verdict on it is q
        rc, out = run([IMGFS] + [a.format(img=w) for a in cmd])
        after = rank(qcheck(w))
        if rc == "timeout" or after > rank(q):
            problems.append("imgfs %s (exit %s) left it worse for qemu-img check: %d -> %d: %s" %
                            (" ".join(cmd[:-1] if cmd[-1] == "{img}" else cmd), rc, rank(q), after,
                             out.strip().splitlines()[-1:]))
        os.remove(w)
    r = img + ".r"
    shutil.copy(img, r)
    rc, out = run([IMGFS, "check", "-r", "all", r])
    if rc == 0 and qcheck(r) != 0:
        problems.append("check -r all exits 0, qemu-img check then exits %s" % qcheck(r))
    os.remove(r)
    if not problems:
        os.remove(img)
    return ["seed %d (%s): %s" % (seed, os.path.basename(base), p) for p in problems]


def main():
    bases = make_bases()
    seeds = [s for s in range(SEED0, SEED0 + N) if not ONLY or str(s) == ONLY]
    # One worker per core: each image is judged on its own.
    with multiprocessing.Pool(min(len(seeds), os.cpu_count() or 1) or 1) as pool:
        results = pool.starmap(judge, [(s, bases) for s in seeds])
    findings = 0
    for lines in results:
        for line in lines:
            print(line)
        findings += bool(lines)
    print("%d of %d damaged images with findings" % (findings, len(seeds)))
    return 1 if findings else 0


sys.exit(main())
