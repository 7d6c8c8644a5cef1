#!/usr/bin/env python3
"""bitmap_in_use.py IMAGE [INDEX]: marks entry INDEX (default 0) of a qcow2
image's bitmap directory in_use, as a crash while the bitmap was being
written leaves it (the tests' way of making an inconsistent bitmap)."""
import struct
import sys

BITMAPS_EXT = 0x23852875


def main(path, index):
    with open(path, "r+b") as f:
        data = f.read()
        off = struct.unpack_from(">I", data, 100)[0]  # header_length (v3)
        while True:
            etype, elen = struct.unpack_from(">II", data, off)
            if etype == 0:
                sys.exit("no bitmaps extension")
            if etype == BITMAPS_EXT:
                doff = struct.unpack_from(">Q", data, off + 24)[0]
                break
            off += 8 + ((elen + 7) & ~7)
        pos = doff
        for _ in range(index):  # entries are 8-byte aligned
            extra, name = struct.unpack_from(">I", data, pos + 20)[0], struct.unpack_from(">H", data, pos + 18)[0]
            pos += (24 + extra + name + 7) & ~7
        flags = struct.unpack_from(">I", data, pos + 12)[0]
        f.seek(pos + 12)
        f.write(struct.pack(">I", flags | 1))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
