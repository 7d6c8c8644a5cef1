#!/usr/bin/env bash
# `imgfs info --output=json` against `qemu-img info --output=json` on images
# made by qemu: qcow2 v2 and v3, lazy refcounts, refcount_bits != 16, dirty
# and corrupt header bits, 512 and 2M clusters, an odd virtual size, overlays
# on qcow2 and raw, a raw file; `--backing-chain` gives one entry per layer.
# Compared: virtual-size, format, cluster-size, backing-filename,
# backing-filename-format, dirty-flag, and format-specific type / compat /
# lazy-refcounts / refcount-bits / corrupt. A key qemu leaves out must be left
# out by imgfs too (or be null/false).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir
cd "$T"

# set_incompat_bit IMG BIT: set a bit in the qcow2 v3 incompatible_features field
set_incompat_bit() {
    python3 - "$1" "$2" <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(72)
    v = struct.unpack(">Q", f.read(8))[0] | (1 << int(sys.argv[2]))
    f.seek(72)
    f.write(struct.pack(">Q", v))
EOF
}

# compare_json QEMU_JSON IMGFS_JSON LABEL CHAIN(0|1)
compare_json() {
    python3 - "$1" "$2" "$3" "$4" <<'EOF' || fail "imgfs info $3 disagrees with qemu-img info"
import json, os, sys

qfile, ifile, label, chain = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
TOP = ("virtual-size", "format", "cluster-size", "backing-filename",
       "backing-filename-format", "dirty-flag")
FS = ("compat", "lazy-refcounts", "refcount-bits", "corrupt")
errors = []

def cmp_key(where, key, q, i):
    if key in q:
        if key not in i:
            errors.append(f"{where}: {key!r} missing (qemu: {q[key]!r})")
        elif i[key] != q[key]:
            errors.append(f"{where}: {key!r} is {i[key]!r}, qemu says {q[key]!r}")
    elif i.get(key) not in (None, False):
        errors.append(f"{where}: {key!r} is {i[key]!r}, qemu has no such key")

def cmp_entry(where, q, i):
    if not isinstance(i, dict):
        errors.append(f"{where}: expected a JSON object, got {type(i).__name__}")
        return
    for k in TOP:
        cmp_key(where, k, q, i)
    qf, jf = q.get("format-specific"), i.get("format-specific")
    if qf is None:
        if jf not in (None, {}):
            errors.append(f"{where}: format-specific present, qemu has none")
        return
    if not isinstance(jf, dict) or not isinstance(jf.get("data"), dict):
        errors.append(f"{where}: format-specific.data missing (qemu: {qf!r})")
        return
    cmp_key(where + " format-specific", "type", qf, jf)
    for k in FS:
        cmp_key(where + " format-specific.data", k, qf["data"], jf["data"])

q = json.load(open(qfile))
try:
    i = json.load(open(ifile))
except ValueError as e:
    print(f"{label}: imgfs output is not JSON: {e}")
    sys.exit(1)
if chain:
    if not isinstance(i, list):
        errors.append(f"--backing-chain: expected a JSON array, got {type(i).__name__}")
    elif len(i) != len(q):
        errors.append(f"--backing-chain: {len(i)} entries, qemu has {len(q)}")
    else:
        for n, (qe, ie) in enumerate(zip(q, i)):
            cmp_entry(f"layer {n}", qe, ie)
            if isinstance(ie, dict):
                qn, jn = qe.get("filename"), ie.get("filename")
                if jn is None or os.path.realpath(jn) != os.path.realpath(qn):
                    errors.append(f"layer {n}: filename {jn!r} is not the file qemu names ({qn!r})")
else:
    cmp_entry("image", q, i)
for e in errors:
    print(f"{label}: {e}")
sys.exit(1 if errors else 0)
EOF
}

# check_info LABEL [imgfs/qemu-img info args...] FILE
check_info() {
    local label=$1 rc=0
    shift
    echo "check: imgfs info --output=json $* ($label)"
    qemu-img info --output=json "$@" >"$T/q.json" || fail "qemu-img info $* failed (test setup)"
    "$IMGFS" info --output=json "$@" >"$T/i.json" 2>"$T/i.err" || rc=$?
    [ "$rc" -eq 0 ] || fail "imgfs info --output=json $* exited $rc: $(cat "$T/i.err")"
    compare_json "$T/q.json" "$T/i.json" "$label" 0
}

check_chain() {
    local label=$1 rc=0
    shift
    echo "check: imgfs info --output=json --backing-chain $* ($label)"
    qemu-img info --output=json --backing-chain "$@" >"$T/q.json" || fail "qemu-img info --backing-chain $* failed (test setup)"
    "$IMGFS" info --output=json --backing-chain "$@" >"$T/i.json" 2>"$T/i.err" || rc=$?
    [ "$rc" -eq 0 ] || fail "imgfs info --output=json --backing-chain $* exited $rc: $(cat "$T/i.err")"
    compare_json "$T/q.json" "$T/i.json" "$label" 1
}

# ---------------------------------------------------------------- images
qcreate -f qcow2 -o compat=0.10,cluster_size=4096 v2.qcow2 16M
qio v2.qcow2 qcow2 "write -P 0x11 0 100K"
qcreate -f qcow2 -o compat=1.1 v3.qcow2 1G
qcreate -f qcow2 -o compat=1.1,cluster_size=512 c512.qcow2 $((5 * MiB + 1536))
qcreate -f qcow2 -o compat=1.1,cluster_size=2M c2m.qcow2 64M
qcreate -f qcow2 -o compat=1.1,lazy_refcounts=on,refcount_bits=8 lazy.qcow2 32M
qcreate -f qcow2 -o compat=1.1,refcount_bits=64 rc64.qcow2 32M
# dirty: lazy refcounts + a write + abort (no clean close)
qcreate -f qcow2 -o compat=1.1,lazy_refcounts=on dirty.qcow2 8M
 (ulimit -c 0; qemu-io -f qcow2 -c 'write -P 0x77 1M 64K' -c abort dirty.qcow2; true) >/dev/null 2>&1 || true
# corrupt bit set by hand (incompatible feature bit 1)
qcreate -f qcow2 -o compat=1.1 corrupt.qcow2 8M
set_incompat_bit corrupt.qcow2 1
qcreate -f raw disk.raw 7M
qcreate -f qcow2 -b v2.qcow2 -F qcow2 ov.qcow2
qcreate -f qcow2 -o compat=0.10 -b disk.raw -F raw ovraw.qcow2 12M
qcreate -f qcow2 -b ov.qcow2 -F qcow2 top.qcow2
mkdir sub
(cd sub && qcreate -f qcow2 -b ../ov.qcow2 -F qcow2 subtop.qcow2 32M)

# test setup: the oracle shows what we want to compare
qemu-img info --output=json dirty.qcow2 | grep -q '"dirty-flag": true' || fail "test setup: dirty.qcow2 is not dirty"
qemu-img info --output=json corrupt.qcow2 | grep -q '"corrupt": true' || fail "test setup: corrupt.qcow2 is not marked corrupt"

# ---------------------------------------------------------------- checks
check_info "qcow2 v2, 4K clusters" v2.qcow2
check_info "qcow2 v3, 1G" v3.qcow2
check_info "512-byte clusters, odd size" c512.qcow2
check_info "2M clusters" c2m.qcow2
check_info "lazy refcounts, refcount_bits=8" lazy.qcow2
check_info "refcount_bits=64" rc64.qcow2
check_info "dirty bit" dirty.qcow2
check_info "corrupt bit" corrupt.qcow2
check_info "raw file" disk.raw
check_info "raw file, -f raw" -f raw disk.raw
check_info "qcow2 forced to -f raw" -f raw v2.qcow2
check_info "overlay on qcow2" ov.qcow2
check_info "overlay on raw" ovraw.qcow2
check_info "overlay in a subdirectory, ../ backing" sub/subtop.qcow2
(cd sub && check_info "overlay with ../ backing, from its own directory" subtop.qcow2)
(cd / && check_info "overlay by absolute path from /" "$T/top.qcow2")

check_chain "single layer" v3.qcow2
check_chain "raw single layer" disk.raw
check_chain "qcow2 on qcow2" ov.qcow2
check_chain "qcow2 on raw" ovraw.qcow2
check_chain "3 layers" top.qcow2
check_chain "3 layers, ../ backing" sub/subtop.qcow2
(cd / && check_chain "3 layers, absolute path from /" "$T/sub/subtop.qcow2")

echo "check: imgfs info (human output) works"
out=$("$IMGFS" info top.qcow2) || fail "imgfs info top.qcow2 failed"
[ -n "$out" ] || fail "imgfs info top.qcow2 printed nothing"

echo "check: imgfs info on a missing file fails and names it"
rc=0
"$IMGFS" info --output=json missing.qcow2 >/dev/null 2>"$T/err" || rc=$?
if [ "$rc" -eq 0 ] || [ "$rc" -ge 128 ]; then fail "imgfs info missing.qcow2 exited $rc"; fi
grep -q 'missing\.qcow2' "$T/err" || fail "imgfs info missing.qcow2: error does not name the file: $(cat "$T/err")"

# The whole output, human and JSON (actual-size, i.e. disk size, included),
# with and without the chain, byte for byte.
m=0
for img in $(ls -- *.qcow2 *.img *.raw 2>/dev/null); do
    for args in "" "--backing-chain" "--output=json" "--output=json --backing-chain"; do
        # shellcheck disable=SC2086
        diff <(qemu-img info -U $args "$img" 2>&1) <("$IMGFS" info $args "$img" 2>&1) >/dev/null ||
            fail "imgfs info $args $img differs from qemu-img's: $(diff <(qemu-img info -U $args "$img" 2>&1) <("$IMGFS" info $args "$img" 2>&1) | head -6)"
    done
    m=$((m + 1))
done
echo "   whole output identical to qemu-img info on $m images (4 forms each)"
echo "PASS: info"
