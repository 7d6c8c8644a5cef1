#!/usr/bin/env python3
"""vhdx_inspect.py IMAGE [PARENT]: checks a VHDX file field by field
against MS-VHDX, independently of imgfs, and prints what a differencing
disk's test needs. Exits 1 naming the first field that is wrong.

Checked: the file type identifier; both headers (signature, CRC-32C over
4 KiB, version 1, log version 0, log on whole MiB) and that the current
one has the higher sequence number; both region tables (signature, CRC,
the BAT and metadata regions on whole MiB, not overlapping); the metadata
table and its items (block size, sector sizes, disk size, flags); the
parent locator (type GUID, UTF-16 keys, parent_linkage as a braced GUID,
relative_path); every BAT entry (states allowed for the disk's kind,
offsets on whole MiB inside the file and outside the structures, no two
blocks at one place, a partly present block's sector bitmap present).
With PARENT: parent_linkage equals PARENT's current data write GUID.

Prints one line per present block: "block N full|partial SECTORS...",
SECTORS the ranges of sectors whose bits are set (first-last), and one per
block in the zero or unmapped state: "block N zero|unmapped"."""
import struct
import sys
import uuid

from vhdx_lib import checked


def fail(msg):
    print("FIELD: " + msg)
    sys.exit(1)


def guid(text):
    return uuid.UUID(text).bytes_le


BAT = guid("2DC27766-F623-4200-9D64-115E9BFD4A08")
META = guid("8B7CA206-4790-4B9A-B8FE-575F050F886E")
PARAMS = guid("CAA16737-FA36-4D43-B3B6-33F0AA44E76B")
SIZE = guid("2FA54224-CD1B-4876-B211-5DBED83BF4B8")
PAGE83 = guid("BECA12AB-B2E6-4523-93EF-C309E000C746")
LOGICAL = guid("8141BF1D-A96F-4709-BA47-F233A8FAAB5F")
PHYSICAL = guid("CDA348C7-445D-4471-9CC9-E9885251C556")
LOCATOR = guid("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C")
VHDX_LOCATOR = guid("B04AEFB7-D19E-4A81-B789-25B8E9445913")
MIB = 1 << 20


def current_header(f):
    heads = []
    for i, at in enumerate((64 * 1024, 128 * 1024)):
        f.seek(at)
        h = f.read(4096)
        if h[:4] != b"head":
            fail(f"header {i + 1}: signature")
        if not checked(h, 4):
            fail(f"header {i + 1}: checksum")
        seq, = struct.unpack_from("<Q", h, 8)
        logv, ver, loglen, logoff = struct.unpack_from("<HHIQ", h, 64)
        if ver != 1 or logv != 0:
            fail(f"header {i + 1}: version {ver}, log version {logv}")
        if loglen % MIB or logoff % MIB or logoff < MIB:
            fail(f"header {i + 1}: log at {logoff}+{loglen}")
        heads.append((seq, h))
    if heads[0][0] == heads[1][0]:
        fail("both headers have one sequence number")
    return max(heads)[1]


def main():
    path = sys.argv[1]
    f = open(path, "rb")
    f.seek(0, 2)
    size = f.tell()
    f.seek(0)
    if f.read(8) != b"vhdxfile":
        fail("file type identifier")
    h = current_header(f)
    data_write = h[32:48]
    if h[48:64] != bytes(16):
        fail("the log GUID is set in a closed image")
    loglen, logoff = struct.unpack_from("<IQ", h, 68)
    regions = []
    for i, at in enumerate((192 * 1024, 256 * 1024)):
        f.seek(at)
        rt = f.read(65536)
        if rt[:4] != b"regi" or not checked(rt, 4):
            fail(f"region table {i + 1}: signature or checksum")
        n, = struct.unpack_from("<I", rt, 8)
        regions.append({rt[16 + k * 32:32 + k * 32]: struct.unpack_from("<QII", rt, 32 + k * 32) for k in range(n)})
    if regions[0] != regions[1]:
        fail("the region tables differ")
    if BAT not in regions[0] or META not in regions[0]:
        fail("region table: BAT or metadata missing")
    structures = [(0, MIB), (logoff, loglen)]
    for g, (off, length, req) in regions[0].items():
        if off % MIB or length % MIB or off < MIB:
            fail(f"region at {off}+{length} not on whole MiB")
        structures.append((off, length))
    for a in structures:
        for b in structures:
            if a is not b and a[0] < b[0] + b[1] and b[0] < a[0] + a[1]:
                fail(f"structures {a} and {b} overlap")
    bat_off, bat_len, _ = regions[0][BAT]
    meta_off, meta_len, _ = regions[0][META]
    f.seek(meta_off)
    mt = f.read(65536)
    if mt[:8] != b"metadata":
        fail("metadata table signature")
    n, = struct.unpack_from("<H", mt, 10)
    items = {}
    for k in range(n):
        e = mt[32 + k * 32:64 + k * 32]
        off, length, flags = struct.unpack_from("<III", e, 16)
        if off < 65536 or off + length > meta_len or length > MIB:
            fail(f"metadata item at {off}+{length}")
        f.seek(meta_off + off)
        items[e[:16]] = (f.read(length), flags)
    for g, name in ((PARAMS, "file parameters"), (SIZE, "disk size"), (PAGE83, "page 83"),
                    (LOGICAL, "logical sector size"), (PHYSICAL, "physical sector size")):
        if g not in items:
            fail(f"metadata: no {name}")
        if not items[g][1] & 4:
            fail(f"metadata: {name} not marked required")
    block, pflags = struct.unpack_from("<II", items[PARAMS][0])
    disk, = struct.unpack_from("<Q", items[SIZE][0])
    lss, = struct.unpack_from("<I", items[LOGICAL][0])
    pss, = struct.unpack_from("<I", items[PHYSICAL][0])
    if block < MIB or block > 256 * MIB or block & (block - 1):
        fail(f"block size {block}")
    if lss not in (512, 4096) or pss not in (512, 4096) or disk % lss or disk == 0:
        fail(f"sector sizes {lss}/{pss}, disk size {disk}")
    diff = bool(pflags & 2)
    if diff:
        if LOCATOR not in items:
            fail("differencing disk without a parent locator")
        loc = items[LOCATOR][0]
        if loc[:16] != VHDX_LOCATOR:
            fail("parent locator type")
        count, = struct.unpack_from("<H", loc, 18)
        keys = {}
        for k in range(count):
            ko, vo, kl, vl = struct.unpack_from("<IIHH", loc, 20 + k * 12)
            keys[loc[ko:ko + kl].decode("utf-16-le")] = loc[vo:vo + vl].decode("utf-16-le")
        link = keys.get("parent_linkage", "")
        if len(link) != 38 or link[0] != "{" or link[-1] != "}":
            fail(f"parent_linkage {link!r}")
        if "relative_path" not in keys or "/" in keys["relative_path"]:
            fail(f"relative_path {keys.get('relative_path')!r}")
        if len(sys.argv) > 2:
            pf = open(sys.argv[2], "rb")
            ph = current_header(pf)
            if uuid.UUID(link[1:-1]).bytes_le != ph[32:48]:
                fail("parent_linkage is not the parent's data write GUID")
        print("parent_linkage " + link)
        print("relative_path " + keys["relative_path"])
    ratio = (1 << 23) * lss // block
    nblocks = (disk + block - 1) // block
    f.seek(bat_off)
    bat = f.read(bat_len)
    entry = lambda i: struct.unpack_from("<Q", bat, i * 8)[0]
    seen = {}
    spb = block // lss
    for b in range(nblocks):
        e = entry(b + b // ratio)
        state, off = e & 7, e & ~0xFFFFF
        if e & 0xFFFF8:
            fail(f"block {b}: reserved bits set")
        if state not in (0, 1, 2, 3, 6, 7) or (state == 7 and not diff):
            fail(f"block {b}: state {state}")
        if state in (2, 3):
            print(f"block {b} " + ("zero" if state == 2 else "unmapped"))
        if state in (0, 1, 2, 3):
            continue
        if off in seen or off >= size or any(s <= off < s + l for s, l in structures):
            fail(f"block {b}: offset {off}")
        seen[off] = b
        if state == 6:
            print(f"block {b} full")
            continue
        sbe = entry((b // ratio) * (ratio + 1) + ratio)
        if sbe & 7 != 6:
            fail(f"block {b}: partly present without a sector bitmap")
        f.seek((sbe & ~0xFFFFF) + (b % ratio) * spb // 8)
        bits = f.read(spb // 8)
        runs, start = [], None
        for s in range(spb + 1):
            on = s < spb and bits[s // 8] >> (s % 8) & 1
            if on and start is None:
                start = s
            elif not on and start is not None:
                runs.append(f"{start}-{s - 1}")
                start = None
        print(f"block {b} partial " + " ".join(runs))


main()
