#!/usr/bin/env python3
"""bitmap_runs.py IMAGE: the persistent dirty bitmaps of a qcow2 image, read
straight from the file (an independent reader for the tests), one line per
bitmap: NAME granularity=G flags=F runs=[FIRST-LAST, ...] as the byte ranges
of the disk its set bits cover."""
import struct
import sys

BITMAPS_EXT = 0x23852875


def main(path):
    with open(path, "rb") as f:
        data = f.read()
    magic, version = struct.unpack_from(">II", data, 0)
    assert magic == 0x514649FB, "not a qcow2 image"
    cluster_bits = struct.unpack_from(">I", data, 20)[0]
    size = struct.unpack_from(">Q", data, 24)[0]
    cs = 1 << cluster_bits
    hdr_len = struct.unpack_from(">I", data, 100)[0] if version >= 3 else 72
    off, directory = hdr_len, None
    while off + 8 <= cs:
        etype, elen = struct.unpack_from(">II", data, off)
        if etype == 0:
            break
        if etype == BITMAPS_EXT:
            _, _, dsize, doff = struct.unpack_from(">IIQQ", data, off + 8)
            directory = data[doff:doff + dsize]
        off += 8 + ((elen + 7) & ~7)
    if directory is None:
        return
    p = 0
    while p + 24 <= len(directory):
        toff, tsize, flags, btype, gbits, nsize, esize = struct.unpack_from(">QIIBBHI", directory, p)
        name = directory[p + 24 + esize:p + 24 + esize + nsize].decode()
        gran = 1 << gbits
        nbits = (size + gran - 1) // gran
        nbytes = (nbits + 7) // 8
        bits = bytearray()
        for i in range(tsize):
            entry = struct.unpack_from(">Q", data, toff + 8 * i)[0]
            host = entry & 0x00FFFFFFFFFFFE00
            n = min(cs, nbytes - i * cs)
            if host:
                bits += data[host:host + n]
            else:
                bits += (b"\xff" if entry & 1 else b"\x00") * n
        runs, start = [], None
        for b in range(nbits + 1):
            on = b < nbits and bits[b // 8] >> (b % 8) & 1
            if on and start is None:
                start = b
            elif not on and start is not None:
                runs.append("%d-%d" % (start * gran, min(b * gran, size) - 1))
                start = None
        names = [n for bit, n in ((1, "in_use"), (2, "auto")) if flags & bit]
        print("%s granularity=%d flags=%s runs=[%s]" % (name, gran, ",".join(names), ", ".join(runs)))
        p += (24 + esize + nsize + 7) & ~7


if __name__ == "__main__":
    main(sys.argv[1])
