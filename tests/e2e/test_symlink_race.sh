#!/usr/bin/env bash
# A root mount of a SOURCE owned by uid 65534: that user swaps evil.raw
# between a file of zeros and a symlink to root's 0600 secret, over and
# over, while reading MNT/evil.raw/disk.raw. The daemon judges the file it
# opened, not the path it looked at before: no read ever returns the
# secret's bytes (at least 5,000 reads).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"

need_fuse
need_cmd setpriv
[[ $(id -u) -eq 0 ]] || skip "needs root: the test is a root mount of a SOURCE that uid 65534 owns"
tmpdir
chmod 711 "$T"
U=65534
as_user() { (cd / && setpriv --reuid=$U --regid=$U --clear-groups "$@"); }

ROOTONLY=$T/rootonly
mkdir -m 700 "$ROOTONLY"
head -c 1M /dev/zero | tr '\000' 'S' >"$ROOTONLY/secret.raw"
chmod 600 "$ROOTONLY/secret.raw"
SRC=$T/src
mkdir "$SRC"
chown $U:$U "$SRC"
as_user sh -c "head -c 1M /dev/zero >'$SRC/zeros'; cp '$SRC/zeros' '$SRC/evil.raw'"
MNT=$T/mnt
mount_imgfs "$SRC" "$MNT"

# The swapper: as in the report, each round a fresh copy of zeros and a
# fresh link take the name in turn.
as_user bash -c "
    cd '$SRC'
    while [ ! -e '$T/stop' ]; do
        cp zeros .r; mv -T .r evil.raw
        ln -sfn '$ROOTONLY/secret.raw' .l; mv -T .l evil.raw
    done" &
swapper=$!
add_cleanup "touch '$T/stop'; wait $swapper 2>/dev/null"

# The reader: opens and reads the view as uid 65534, counting reads that
# returned data and reads that returned the secret's bytes.
touch "$T/counts"
chmod 666 "$T/counts"
as_user "$PY" - "$MNT/evil.raw/disk.raw" "$T/counts" <<'EOF'
import os, sys, time
path, out = sys.argv[1], sys.argv[2]
reads = hits = tries = 0
while reads < 5000 and tries < 20000:
    tries += 1
    time.sleep(0.002)  # room for the swapper between reads, as a user's reads leave it
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        continue
    try:
        data = os.pread(fd, 4096, 0)
    except OSError:
        data = b""
    finally:
        os.close(fd)
    if data:
        reads += 1
        if b"S" in data:
            hits += 1
open(out, "w").write(f"{reads} {hits} {tries}\n")
EOF
touch "$T/stop"
wait $swapper 2>/dev/null || true
read -r reads hits tries <"$T/counts"
log "reads with data: $reads of $tries tries; reads of the secret: $hits"
[[ $reads -ge 5000 ]] || fail "only $reads reads returned data in $tries tries (the view was never served)"
[[ $hits -eq 0 ]] || fail "$hits of $reads reads returned root's secret through a symlink swap"
mount_alive "$MNT" || fail "the daemon died"
echo "PASS: a symlink swap in SOURCE never serves root's file"
