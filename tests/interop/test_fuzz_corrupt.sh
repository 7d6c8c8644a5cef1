#!/usr/bin/env bash
# Damaged images never crash, hang or bloat: tools/fuzz_corrupt.py damages
# qcow2 images qemu-img made (several layouts: 512-byte clusters with
# snapshots and a bitmap, extended L2, compat 0.10, 1- and 64-bit refcounts,
# zstd) and runs info, check, reads, writes, check -r all, snapshot -c and
# resize on each. Fixed seed, so a failure replays (ONLY=N). Seed 2 holds a
# case that once grew a file to 188 TB (an in-place write past the end).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS" "$IMGCAT" "$IMGWRITE"
tmpdir

n=${FUZZ_ITERATIONS:-70}
python3 "$HERE/tools/fuzz_corrupt.py" "$IMGFS_BUILD" "$n" 2 "$T/fuzz" || fail "damaged images made the tools crash, hang or grow a file (see above)"
echo "PASS: $n damaged images: no crash, hang or runaway growth"
