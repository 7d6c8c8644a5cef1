#!/usr/bin/env bash
# imgfs snapshot -c/-a/-d against qemu as the oracle: after every step
# qemu-img check is clean (no errors, no leaks), qemu-img snapshot -l lists
# what is expected, every snapshot converts (-l) to the content it was taken
# with, and apply restores content and size. Snapshots made by qemu and by
# imgfs are mixed, and each deletes the other's.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io sha256sum python3
need_tool "$IMGFS"
tmpdir

sum_cur() { qemu-img convert -U -O raw "$1" "$T/x.raw" && sha256sum < "$T/x.raw" | cut -d' ' -f1; }
sum_snap() { qemu-img convert -U -l "snapshot.name=$2" -O raw "$1" "$T/x.raw" && sha256sum < "$T/x.raw" | cut -d' ' -f1; }
names() { qemu-img snapshot -l "$1" | tail -n +3 | awk '{print $2}' | tr '\n' ' '; }
vsize() { qemu-img info -U --output=json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'; }

run_matrix() { # LABEL IMG
    local label=$1 img=$2
    echo "case: $label"
    declare -A want
    qio "$img" qcow2 "write -P 0x11 0 1M" "write -P 0x12 3000000 70000"
    want[A]=$(sum_cur "$img")
    "$IMGFS" snapshot -c A "$img" || fail "$label: imgfs snapshot -c A"
    qcheck "$img" "$label after -c A"
    qio "$img" qcow2 "write -P 0x21 500000 1M"
    want[Q]=$(sum_cur "$img")
    qemu-img snapshot -c Q "$img"                      # one made by qemu
    "$IMGWRITE" "$img" 123 0x31 2000000 || fail "$label: imgwrite"
    want[B]=$(sum_cur "$img")
    "$IMGFS" snapshot -c B "$img" || fail "$label: imgfs snapshot -c B"
    qcheck "$img" "$label after -c B"
    [[ $(names "$img") == "A Q B " ]] || fail "$label: snapshot list is '$(names "$img")'"
    for s in A Q B; do
        [[ $(sum_snap "$img" $s) == "${want[$s]}" ]] || fail "$label: snapshot $s does not hold what it was taken with"
    done
    "$IMGWRITE" "$img" 4000000 0x41 100000 || fail "$label: imgwrite"
    "$IMGFS" snapshot -a Q "$img" || fail "$label: imgfs snapshot -a Q"
    qcheck "$img" "$label after -a Q"
    [[ $(sum_cur "$img") == "${want[Q]}" ]] || fail "$label: apply Q did not restore its content"
    "$IMGFS" snapshot -d Q "$img" || fail "$label: imgfs snapshot -d Q (made by qemu)"
    qcheck "$img" "$label after -d Q"
    qemu-img snapshot -d A "$img"                      # qemu deletes one made by imgfs
    qcheck "$img" "$label after qemu deleted A"
    [[ $(names "$img") == "B " ]] || fail "$label: snapshot list is '$(names "$img")' after deletions"
    [[ $(sum_snap "$img" B) == "${want[B]}" ]] || fail "$label: snapshot B changed"
    [[ $(sum_cur "$img") == "${want[Q]}" ]] || fail "$label: current state changed by deletions"
    "$IMGFS" snapshot -a 3 "$img" || fail "$label: apply by ID"  # B got ID 3
    [[ $(sum_cur "$img") == "${want[B]}" ]] || fail "$label: apply by ID"
    "$IMGFS" snapshot -d B "$img"
    qcheck "$img" "$label after the last delete"
    [[ -z $(names "$img") ]] || fail "$label: snapshots left"
    echo "   $label: create/apply/delete agree with qemu, check clean after each step"
}

for cs in 512 65536; do
    for compat in 0.10 1.1; do
        qemu-img create -q -f qcow2 -o "cluster_size=$cs,compat=$compat" "$T/i-$cs-$compat.qcow2" 8M
        run_matrix "cluster_size=$cs compat=$compat" "$T/i-$cs-$compat.qcow2"
    done
done
qemu-img create -q -f qcow2 -o refcount_bits=4 "$T/rc4.qcow2" 8M
run_matrix "refcount_bits=4" "$T/rc4.qcow2"
qemu-img create -q -f qcow2 "$T/base.qcow2" 8M
qio "$T/base.qcow2" qcow2 "write -P 0x7e 0 8M"
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$T/over.qcow2"
run_matrix "overlay on a backing file" "$T/over.qcow2"
qemu-img create -q -f raw "$T/src.raw" 8M
python3 -c "import sys; f=open(sys.argv[1],'r+b'); f.write(bytes(range(256))*8192)" "$T/src.raw"
qemu-img convert -c -O qcow2 "$T/src.raw" "$T/comp.qcow2"
run_matrix "compressed clusters" "$T/comp.qcow2"

echo "case: applying a snapshot taken before a resize restores the old size"
qemu-img create -q -f qcow2 "$T/r.qcow2" 4M
qio "$T/r.qcow2" qcow2 "write -P 0x55 0 4M"
"$IMGFS" snapshot -c small "$T/r.qcow2"
qemu-img resize -q "$T/r.qcow2" 64M
qio "$T/r.qcow2" qcow2 "write -P 0x66 60M 1M"
"$IMGFS" snapshot -a small "$T/r.qcow2" || fail "apply across a resize"
[[ $(vsize "$T/r.qcow2") == $((4 * MiB)) ]] || fail "size after apply is $(vsize "$T/r.qcow2")"
qcheck "$T/r.qcow2" "apply across a resize"
qemu-io -f qcow2 -c "read -P 0x55 0 4M" "$T/r.qcow2" | grep -q "read 4194304/4194304" || fail "content after apply"

echo "case: refcount overflow is refused before anything changes"
qemu-img create -q -f qcow2 -o refcount_bits=2 "$T/rc2.qcow2" 8M
qio "$T/rc2.qcow2" qcow2 "write -P 0x01 0 1M"
"$IMGFS" snapshot -c a "$T/rc2.qcow2" && "$IMGFS" snapshot -c b "$T/rc2.qcow2" || fail "two snapshots fit in 2-bit refcounts"
rc=0; out=$("$IMGFS" snapshot -c c "$T/rc2.qcow2" 2>&1) || rc=$?
[[ $rc -ne 0 && $out == *overflow* ]] || fail "a third snapshot must fail with refcount overflow: rc=$rc out=$out"
qcheck "$T/rc2.qcow2" "refcount overflow refused"
[[ $(names "$T/rc2.qcow2") == "a b " ]] || fail "snapshot list after the refused create"

echo "case: older snapshot table layouts (v2 without extra data; 16 bytes without icount)"
cat > "$T/shrink_extra.py" <<'PY'
import struct, sys
path, extra = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(60); n, off = struct.unpack(">IQ", f.read(12))
    assert n == 1
    f.seek(off); fixed = bytearray(f.read(40))
    id_len, name_len = struct.unpack(">HH", fixed[12:16])
    old_extra = struct.unpack(">I", fixed[36:40])[0]
    var = f.read(old_extra + id_len + name_len)
    struct.pack_into(">I", fixed, 36, extra)
    entry = bytes(fixed) + var[:extra] + var[old_extra:]
    old_len = (40 + len(var) + 7) & ~7
    f.seek(off); f.write(entry.ljust(old_len, b"\0"))
PY
for extra in 0 16; do
    img=$T/old$extra.qcow2
    # version 3 requires the disk size in the extra data: no extra data is v2 only
    compat=1.1; [[ $extra == 0 ]] && compat=0.10
    qemu-img create -q -f qcow2 -o compat=$compat "$img" 4M
    qio "$img" qcow2 "write -P 0x51 0 1M"
    want=$(sum_cur "$img")
    qemu-img snapshot -c old "$img"
    python3 "$T/shrink_extra.py" "$img" $extra
    qcheck "$img" "extra data of $extra bytes"
    diff <("$IMGFS" snapshot -l "$img") <(qemu-img snapshot -l "$img") || fail "extra=$extra: snapshot -l differs from qemu-img's"
    "$IMGFS" snapshot -c new "$img" || fail "extra=$extra: imgfs snapshot -c"
    qcheck "$img" "extra=$extra after -c new"
    # qemu-img shows an icount the table does not hold as blank, and so must
    # the rewritten table: the old entry must not gain an icount of 0
    [[ $(qemu-img snapshot -l "$img" | awk '$2 == "old" {print NF}') == 7 ]] ||
        fail "extra=$extra: the old snapshot gained an icount: $(qemu-img snapshot -l "$img")"
    diff <("$IMGFS" snapshot -l "$img") <(qemu-img snapshot -l "$img") || fail "extra=$extra: listing differs after -c"
    [[ $(sum_snap "$img" old) == "$want" ]] || fail "extra=$extra: snapshot old lost its content"
    echo "   extra data $extra bytes: listed as qemu-img lists it, kept intact by a rewrite"
done

echo "case: errors"
rc=0; out=$("$IMGFS" snapshot -d nope "$T/r.qcow2" 2>&1) || rc=$?
[[ $rc -ne 0 && $out == *nope* ]] || fail "deleting a missing snapshot: rc=$rc out=$out"
qemu-img create -q -f raw "$T/plain.img" 1M
rc=0; out=$("$IMGFS" snapshot -c x "$T/plain.img" 2>&1) || rc=$?
[[ $rc -ne 0 && $out == *snapshot* ]] || fail "snapshot on raw: rc=$rc out=$out"
echo "PASS: snapshot_ops"
