#!/usr/bin/env bash
# Writing an image that has internal snapshots: shared L2 tables and data
# clusters are copied on write, the snapshots keep their content exactly,
# and qemu-img check finds no error and no leak. Covers zlib-compressed
# clusters shared with snapshots (the corpus image made by qemu) and a
# 512-byte-cluster image with several snapshots.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io sha256sum
need_tool "$IMGWRITE" "$IMGCAT"
tmpdir

# write_both IMG EXPECTED_RAW OFF BYTE LEN: through imagecore, and into the model
write_both() {
    "$IMGWRITE" "$1" "$3" "$4" "$5" || fail "imgwrite $1 $3 $4 $5 failed"
    "$PYTHON" - "$2" "$3" "$4" "$5" <<'PYEOF'
import sys
path, off, byte, n = sys.argv[1], int(sys.argv[2], 0), int(sys.argv[3], 0), int(sys.argv[4], 0)
with open(path, "r+b") as f:
    f.seek(off)
    f.write(bytes([byte]) * n)
PYEOF
}
PYTHON=$(command -v python3)

snap_sums() { # IMG: "id sha256" per snapshot, via qemu-img convert -l
    local img=$1 id
    for id in $(qemu-img info -U --output=json "$img" | "$PYTHON" -c 'import json,sys; [print(s["id"]) for s in json.load(sys.stdin).get("snapshots", [])]'); do
        qemu-img convert -U -l "snapshot.id=$id" -O raw "$img" "$T/s.raw"
        echo "$id $(sha256sum < "$T/s.raw" | cut -d' ' -f1)"
    done
}

run_case() { # LABEL IMG WRITES...
    local label=$1 img=$2
    shift 2
    echo "case: $label"
    local before
    before=$(snap_sums "$img")
    [[ $(wc -l <<< "$before") -ge 2 ]] || fail "$label: expected at least 2 snapshots"
    qemu-img convert -U -O raw "$img" "$T/expected.raw"
    local w
    for w in "$@"; do
        # shellcheck disable=SC2086
        write_both "$img" "$T/expected.raw" $w
    done
    qcheck "$img" "$label"
    qemu-img compare -q -f raw -F qcow2 "$T/expected.raw" "$img" || fail "$label: current state differs from the model"
    cmp "$T/expected.raw" <("$IMGCAT" "$img") || fail "$label: imgcat differs from the model"
    [[ $(snap_sums "$img") == "$before" ]] || fail "$label: a snapshot changed"
    echo "   $label: snapshots unchanged, current state as written, check clean"
}

CORP=$IMGFS_CORPUS/qcow2/generated/v2-compressed-snapshots.qcow2
if [[ -f $CORP ]]; then
    cp "$CORP" "$T/corpus.qcow2"
    chmod 644 "$T/corpus.qcow2"
    run_case "compressed clusters shared with snapshots (corpus)" "$T/corpus.qcow2" \
        "0 0xab 70000" "300000 0xcd 200000" "1600000 0x01 5" "2000000 0x02 97152"
else
    echo "   (corpus not found at $IMGFS_CORPUS: that case not run)"
fi

qemu-img create -q -f qcow2 -o cluster_size=512 "$T/small.qcow2" 4M
qio "$T/small.qcow2" qcow2 "write -P 0x11 0 4M"
qemu-img snapshot -c one "$T/small.qcow2"
qio "$T/small.qcow2" qcow2 "write -P 0x22 100000 300000" "write -z 2M 64k"
qemu-img snapshot -c two "$T/small.qcow2"
qio "$T/small.qcow2" qcow2 "write -P 0x33 3M 70000"
run_case "512-byte clusters, two snapshots" "$T/small.qcow2" \
    "1 0x44 1" "99000 0x55 40000" "2097000 0x66 70000" "4194000 0x77 304"

qemu-img create -q -f qcow2 "$T/base.qcow2" 8M
qio "$T/base.qcow2" qcow2 "write -P 0x5a 0 8M"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$T/top.qcow2"
qio "$T/top.qcow2" qcow2 "write -P 0x61 1M 1M"
qemu-img snapshot -c a "$T/top.qcow2"
qio "$T/top.qcow2" qcow2 "write -P 0x62 1500k 1M"
qemu-img snapshot -c b "$T/top.qcow2"
run_case "overlay with snapshots (copy-on-write from the backing file)" "$T/top.qcow2" \
    "10 0x70 100" "1048000 0x71 2000000" "7000000 0x72 1048576"
echo "PASS: snapshot_writes"
