#!/usr/bin/env python3
"""Writes a raw disk of data runs and holes for the benchmarks.

make_disk.py PATH SIZE SEED random|text

Runs of 4 to 64 MiB, about half of them data: random bytes (incompressible)
or text-like bytes (compressible, as disk contents often are). The same SEED
gives the same layout (random data differs from run to run)."""
import os
import random
import sys

path, size, seed, kind = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
rnd = random.Random(seed)
chunk = 4 << 20
with open(path, "wb") as f:
    f.truncate(size)
    pos = 0
    while pos < size:
        run = min(rnd.randint(1, 16) * chunk, size - pos)
        if rnd.random() < 0.5:
            f.seek(pos)
            if kind == "random":
                for _ in range(run // chunk):
                    f.write(os.urandom(chunk))
            else:
                words = [bytes(rnd.choice(b"abcdefghij klmnop") for _ in range(64)) for _ in range(64)]
                block = b"".join(rnd.choice(words) for _ in range(chunk // 64))
                for _ in range(run // chunk):
                    f.write(block)
        pos += run
