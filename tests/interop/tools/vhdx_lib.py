"""Shared by the VHDX test tools: CRC-32C (Castagnoli, as MS-VHDX uses it)
and the check of a structure's checksum field."""
import struct

POLY = 0x82F63B78
TABLE = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ POLY if _c & 1 else _c >> 1
    TABLE.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    for b in data:
        c = (c >> 8) ^ TABLE[(c ^ b) & 0xFF]
    return c ^ 0xFFFFFFFF


def with_checksum(block, at=4):
    """`block` with the CRC-32C of itself (the field read as zero) at `at`."""
    block = bytearray(block)
    block[at:at + 4] = b"\0\0\0\0"
    block[at:at + 4] = struct.pack("<I", crc32c(block))
    return bytes(block)


def checked(block, at=4):
    """Whether the checksum field at `at` holds the block's CRC-32C."""
    return with_checksum(block, at) == bytes(block)
