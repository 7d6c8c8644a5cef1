#!/usr/bin/env python3
"""sparse_records.py IMAGE OUT: a VHDX image as the records
fuzz::SparseFileFrom reads (4-byte LE offset, 2-byte LE length, bytes).

Its structures whole: the first MiB (identifier, headers, region tables),
the log, the metadata region and the BAT, each as its runs of non-zero
bytes. Of the payload only the first 64 bytes of each MiB that holds data
(found by SEEK_DATA): enough for blocks to read as data, small enough for
a fuzz input."""
import os
import struct
import sys

MIB = 1 << 20
src, dst = sys.argv[1], sys.argv[2]
out = bytearray()


def emit(off, data):
    global out
    for i in range(0, len(data), 65535):
        piece = data[i:i + 65535]
        if off + i < 1 << 32:
            out += struct.pack("<IH", off + i, len(piece)) + piece


def emit_runs(f, off, length):
    """The non-zero runs of [off, off+length), split at 16 zero bytes."""
    f.seek(off)
    data = f.read(length)
    i = 0
    while i < len(data):
        if data[i] == 0:
            nz = len(data) - len(data[i:].lstrip(b"\0"))
            i = nz
            continue
        j = data.find(b"\0" * 16, i)
        j = len(data) if j < 0 else j
        emit(off + i, data[i:j])
        i = j


with open(src, "rb") as f:
    size = os.fstat(f.fileno()).st_size
    structures = [(0, MIB)]
    heads = []
    for at in (64 * 1024, 128 * 1024):
        f.seek(at)
        h = f.read(80)
        if h[:4] == b"head":
            heads.append((struct.unpack_from("<Q", h, 8)[0], h))
    if heads:
        h = max(heads)[1]
        log_length, log_offset = struct.unpack_from("<IQ", h, 68)
        structures.append((log_offset, log_length))
    f.seek(192 * 1024)
    rt = f.read(64 * 1024)
    if rt[:4] == b"regi":
        for i in range(min(struct.unpack_from("<I", rt, 8)[0], 2047)):
            off, length = struct.unpack_from("<QI", rt, 16 + i * 32 + 16)
            structures.append((off, min(length, 16 * MIB)))
    for off, length in structures:
        if off < size:
            emit_runs(f, off, min(length, size - off))
    inside = lambda o: any(s <= o < s + l for s, l in structures)
    pos = 0
    while pos < size:
        try:
            pos = os.lseek(f.fileno(), pos, os.SEEK_DATA)
        except OSError:
            break
        mib = pos // MIB * MIB
        if not inside(mib):
            f.seek(pos)
            head = f.read(64).rstrip(b"\0")
            if head:
                emit(pos, head)
        pos = mib + MIB
    if size:  # the file's length: its last byte, zero or not
        f.seek(size - 1)
        emit(size - 1, f.read(1))
open(dst, "wb").write(out)
