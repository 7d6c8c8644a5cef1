#!/usr/bin/env python3
"""Seeds for the table targets, cut out of a real qcow2 image.

  seed_tables.py snapshots IMAGE OUT   -> qcow2_snapshot_table_fuzz input
  seed_tables.py bitmaps IMAGE OUT     -> qcow2_bitmap_dir_fuzz input

The targets put the fuzzed blob at PAYLOAD in an image they make, so the
offsets inside the table are moved to where the copied tables land in the
blob (snapshot L1 tables are copied empty: their L2 tables are not). Writes
nothing for an image without such a table or with clusters above 64 KiB.
"""
import struct
import sys

PAYLOAD = 256 << 10  # kPayloadOffset in qcow2_builder.h


def align(n, a):
    return (n + a - 1) // a * a


def header(img):
    if img[:4] != b"QFI\xfb":
        return None
    h = {}
    (h["version"],) = struct.unpack_from(">I", img, 4)
    (h["cluster_bits"],) = struct.unpack_from(">I", img, 20)
    (h["size"],) = struct.unpack_from(">Q", img, 24)
    h["nb_snapshots"], h["snapshots_offset"] = struct.unpack_from(">IQ", img, 60)
    h["bitmaps"] = None
    if h["version"] >= 3:
        (hlen,) = struct.unpack_from(">I", img, 100)
        off = hlen
        cs = 1 << h["cluster_bits"]
        while off + 8 <= min(cs, len(img)):
            t, n = struct.unpack_from(">II", img, off)
            off += 8
            if t == 0:
                break
            if t == 0x23852875 and n >= 24:
                nb, _, dsize, doff = struct.unpack_from(">IIQQ", img, off)
                h["bitmaps"] = (nb, dsize, doff)
            off += align(n, 8)
    return h


def snapshots(img, h):
    cs = 1 << h["cluster_bits"]
    off = h["snapshots_offset"]
    entries = []
    for _ in range(h["nb_snapshots"]):
        fixed = bytearray(img[off:off + 40])
        if len(fixed) < 40:
            return None
        _, l1_size, id_len, name_len = struct.unpack_from(">QIHH", fixed, 0)
        (extra,) = struct.unpack_from(">I", fixed, 36)
        var = img[off + 40:off + 40 + extra + id_len + name_len]
        entries.append((fixed, var, l1_size))
        off += align(40 + len(var), 8)
    table_len = sum(align(40 + len(v), 8) for _, v, _ in entries)
    blob = bytearray(align(table_len, cs))
    pos = 0
    for fixed, var, l1_size in entries:
        l1_at = len(blob)
        blob += bytes(align(l1_size * 8, cs))  # an empty L1 table
        struct.pack_into(">Q", fixed, 0, PAYLOAD + l1_at)
        blob[pos:pos + 40 + len(var)] = fixed + var
        pos += align(40 + len(var), 8)
    return struct.pack(">BIQ", h["cluster_bits"] - 9, h["nb_snapshots"], h["size"]) + bytes(blob)


def bitmaps(img, h):
    cs = 1 << h["cluster_bits"]
    nb, dsize, doff = h["bitmaps"]
    d = bytearray(img[doff:doff + dsize])
    blob = bytearray(align(len(d), cs))
    p = 0
    while p + 24 <= len(d):
        toff, tsize = struct.unpack_from(">QI", d, p)
        (name_size,) = struct.unpack_from(">H", d, p + 18)
        (extra,) = struct.unpack_from(">I", d, p + 20)
        table = bytearray(img[toff:toff + tsize * 8])
        for i in range(len(table) // 8):
            (t,) = struct.unpack_from(">Q", table, i * 8)
            host = t & 0x00fffffffffffe00
            if host:
                at = len(blob)
                blob += img[host:host + cs].ljust(cs, b"\0")
                struct.pack_into(">Q", table, i * 8, PAYLOAD + at)
        at = len(blob)
        blob += table.ljust(align(len(table), cs), b"\0")
        struct.pack_into(">Q", d, p, PAYLOAD + at if tsize else 0)
        p += align(24 + extra + name_size, 8)
    blob[:len(d)] = d
    return struct.pack(">BIQQ", h["cluster_bits"] - 9, nb, h["size"], dsize) + bytes(blob)


def main():
    kind, image, out = sys.argv[1:4]
    with open(image, "rb") as f:
        img = f.read()
    h = header(img)
    if not h or not 9 <= h["cluster_bits"] <= 16:
        return
    seed = None
    if kind == "snapshots" and h["nb_snapshots"]:
        seed = snapshots(img, h)
    elif kind == "bitmaps" and h["bitmaps"]:
        seed = bitmaps(img, h)
    if seed and len(seed) <= 1 << 20:
        with open(out, "wb") as f:
            f.write(seed)


if __name__ == "__main__":
    main()
