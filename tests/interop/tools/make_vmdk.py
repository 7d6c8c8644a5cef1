#!/usr/bin/env python3
"""Writes VMDK layouts that qemu-img reads but cannot create, from the
format descriptions (VMware's Virtual Disk Format, the seSparse notes in
qemu's documentation). Each has a known pattern of grains so a test can
compare what imgfs reads with what qemu reads.

  make_vmdk.py cowd DIR        DIR/cowd.vmdk + DIR/cowd-delta.vmdk (vmfsSparse)
  make_vmdk.py sesparse DIR    DIR/se.vmdk + DIR/se-sesparse.vmdk (seSparse)
  make_vmdk.py stream DIR      DIR/stream.vmdk: streamOptimized, grain
                               directory only in the footer, with markers
"""
import os
import struct
import sys
import zlib

SECTOR = 512


def descriptor(cid, create_type, extent_line):
    return ('# Disk DescriptorFile\nversion=1\nCID=%s\nparentCID=ffffffff\n'
            'createType="%s"\n\n# Extent description\n%s\n\n'
            '# The Disk Data Base\n#DDB\nddb.adapterType = "lsilogic"\n'
            % (cid, create_type, extent_line))


def cowd(d):
    sectors, grain = 65536, 8          # 32 MiB in 4 KiB grains
    entries = 4096                     # per grain table, fixed for COWD
    tables = -(-sectors // (entries * grain))
    gd, gt = 4, 5                      # the header takes sectors 0-3
    data = gt + entries * 4 // SECTOR
    img = bytearray((data + 3 * grain) * SECTOR)
    struct.pack_into('<4s7I', img, 0, b'COWD', 1, 3, sectors, grain, gd, tables, data + 3 * grain)
    struct.pack_into('<%dI' % tables, img, gd * SECTOR, gt, *([0] * (tables - 1)))
    for n, (g, fill) in enumerate(((0, b'A'), (5, b'B'), (4095, b'C'))):
        struct.pack_into('<I', img, gt * SECTOR + g * 4, data + n * grain)
        img[(data + n * grain) * SECTOR:(data + (n + 1) * grain) * SECTOR] = fill * (grain * SECTOR)
    open(os.path.join(d, 'cowd-delta.vmdk'), 'wb').write(img)
    open(os.path.join(d, 'cowd.vmdk'), 'w').write(
        descriptor('12345678', 'vmfsSparse', 'RW %d VMFSSPARSE "cowd-delta.vmdk"' % sectors))


def sesparse(d):
    sectors = 65536                    # 32 MiB: two grain tables of 16 MiB
    layout = dict(volatile=(1, 1), journal_header=(2, 2), journal=(2048, 2048), gd=(4096, 2048),
                  gts=(6144, 2048), bitmap=(8192, 2048), backmap=(10240, 2048), grains=(12288, sectors))
    head = [0xcafebabe, 0x200000001, sectors, 8, 64, 0, 0, 0, 0, 0]
    for k in ('volatile', 'journal_header', 'journal', 'gd', 'gts', 'bitmap', 'backmap', 'grains'):
        head += list(layout[k])
    grains = layout['grains'][0]
    img = bytearray((grains + 4 * 8) * SECTOR)
    struct.pack_into('<26Q', img, 0, *head)
    struct.pack_into('<Q', img, SECTOR, 0xcafecafe)
    # Directory entry 0 names grain table 1; entry 1 has none.
    struct.pack_into('<Q', img, layout['gd'][0] * SECTOR, 0x1000000000000001)
    table = (layout['gts'][0] + 64) * SECTOR

    def allocated(index):
        return 0x3000000000000000 | (index & 0xfff) << 48 | index >> 12

    struct.pack_into('<Q', img, table + 0 * 8, allocated(0))
    struct.pack_into('<Q', img, table + 1 * 8, 0x2000000000000000)   # a zero grain
    struct.pack_into('<Q', img, table + 2 * 8, allocated(3))
    struct.pack_into('<Q', img, table + 7 * 8, 0x1000000000000002)   # unmapped by the guest
    for index, fill in ((0, b'D'), (2, b'X'), (3, b'E')):
        at = (grains + index * 8) * SECTOR
        img[at:at + 4096] = fill * 4096
    open(os.path.join(d, 'se-sesparse.vmdk'), 'wb').write(img)
    open(os.path.join(d, 'se.vmdk'), 'w').write(
        descriptor('abcdef01', 'seSparse', 'RW %d SESPARSE "se-sesparse.vmdk"' % sectors))


def stream(d):
    sectors, grain, entries = 8192, 128, 512    # 4 MiB, 64 KiB grains
    text = descriptor('fffffffe', 'streamOptimized', 'RW %d SPARSE "stream.vmdk"' % sectors).encode()

    def header(gd_sector):
        h = bytearray(SECTOR)
        struct.pack_into('<4sIIQQQQIQQQ', h, 0, b'KDMV', 3, 0x30001, sectors, grain, 1, 2, entries, 0,
                         gd_sector, 128)
        h[73:77] = b'\n \r\n'
        struct.pack_into('<H', h, 77, 1)
        return h

    def marker(size_sectors, kind):
        return struct.pack('<QII', size_sectors, 0, kind) + bytes(SECTOR - 16)

    out = bytearray(header(0xffffffffffffffff))
    out += text + bytes(2 * SECTOR - len(text))
    out += bytes(128 * SECTOR - len(out))
    table = [0] * entries
    for g, fill in ((0, b'F'), (3, b'G'), (63, b'H')):
        table[g] = len(out) // SECTOR
        packed = zlib.compress(fill * (grain * SECTOR))
        m = struct.pack('<QI', g * grain, len(packed)) + packed
        out += m + bytes(-len(m) % SECTOR)
    out += marker(4, 1)
    gt_sector = len(out) // SECTOR
    out += struct.pack('<%dI' % entries, *table)
    out += marker(1, 2)
    gd_sector = len(out) // SECTOR
    out += struct.pack('<I', gt_sector) + bytes(SECTOR - 4)
    out += marker(1, 3) + header(gd_sector) + bytes(SECTOR)
    open(os.path.join(d, 'stream.vmdk'), 'wb').write(out)


if __name__ == '__main__':
    {'cowd': cowd, 'sesparse': sesparse, 'stream': stream}[sys.argv[1]](sys.argv[2])
