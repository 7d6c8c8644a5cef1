"""damage(data, rnd): the damage the fuzz tests do to an image's bytes, in
place: 1-8 random bytes, bit flips or runs of 0/0xff/0x80/0x7f/1 within a
"hot" prefix (the first 4 KiB, 64 KiB, 1 MiB or all of it), then, one time
in ten, a truncation. Returns the (possibly shorter) bytearray. The same
rnd state always gives the same damage, so a finding replays by seed."""


def damage(data, rnd, hot_sizes=(4096, 65536, 1 << 20)):
    hot = min(len(data), rnd.choice(list(hot_sizes) + [len(data)]))
    for _ in range(rnd.randint(1, 8)):
        pos = rnd.randrange(0, hot)
        kind = rnd.random()
        if kind < 0.5: data[pos] = rnd.randrange(256)
        elif kind < 0.8: data[pos] ^= 1 << rnd.randrange(8)
        else:
            v = rnd.choice([0, 0xff, 0x80, 0x7f, 1])
            for j in range(rnd.randint(1, 8)):
                if pos + j < len(data): data[pos + j] = v
    if rnd.random() < 0.1: data = data[:rnd.randrange(len(data))]
    return data
