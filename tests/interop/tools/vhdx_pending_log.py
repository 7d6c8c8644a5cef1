#!/usr/bin/env python3
"""Leaves a VHDX image with one log entry written but not applied, as a
writer killed between its log write and the in-place update would.

Usage: vhdx_pending_log.py IMAGE DATA_OFFSET ZERO_OFFSET

The entry writes 4 KiB of 0xee (the first 8 and last 4 bytes 0x77) at
DATA_OFFSET of the file and zeros 4 KiB at ZERO_OFFSET; the current header
gets a fresh log GUID naming it. Written from MS-VHDX's description of the
log (entry header, data and zero descriptors, data sectors, CRC-32C)."""
import os
import struct
import sys
import uuid

from vhdx_lib import with_checksum


def main():
    path, data_off, zero_off = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0)
    assert data_off % 4096 == 0 and zero_off % 4096 == 0
    with open(path, "r+b") as f:
        heads = []
        for at in (64 * 1024, 128 * 1024):
            f.seek(at)
            h = f.read(4096)
            ok = h[:4] == b"head" and with_checksum(h) == h
            heads.append((struct.unpack_from("<Q", h, 8)[0] if ok else -1, at, h))
        seq, at, h = max(heads)
        assert seq >= 0, "no valid header"
        log_length, log_offset = struct.unpack_from("<IQ", h, 68)
        log_guid = uuid.uuid4().bytes_le
        size = os.fstat(f.fileno()).st_size
        sequence = 7

        sector = bytearray(b"\xee" * 4096)
        sector[:8] = b"\x77" * 8
        sector[4092:] = b"\x77" * 4
        header = bytearray(64)
        entry_length = 4096 + 4096  # descriptor sector + one data sector
        header[0:4] = b"loge"
        struct.pack_into("<IIQI", header, 8, entry_length, 0, sequence, 2)
        header[32:48] = log_guid
        struct.pack_into("<QQ", header, 48, size, size)
        desc = bytearray(4096)
        desc[:64] = header
        d = bytearray(32)  # data descriptor
        d[0:4] = b"desc"
        d[4:8] = bytes(sector[4092:])
        d[8:16] = bytes(sector[:8])
        struct.pack_into("<QQ", d, 16, data_off, sequence)
        desc[64:96] = d
        z = bytearray(32)  # zero descriptor
        z[0:4] = b"zero"
        struct.pack_into("<QQQ", z, 8, 4096, zero_off, sequence)
        desc[96:128] = z
        data = bytearray(4096)
        data[0:4] = b"data"
        struct.pack_into("<I", data, 4, sequence >> 32)
        data[8:4092] = sector[8:4092]
        struct.pack_into("<I", data, 4092, sequence & 0xFFFFFFFF)
        entry = with_checksum(bytes(desc) + bytes(data))
        assert len(entry) <= log_length
        f.seek(log_offset)
        f.write(entry)

        h = bytearray(h)
        h[48:64] = log_guid
        f.seek(at)
        f.write(with_checksum(h))


main()
