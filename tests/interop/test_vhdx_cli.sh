#!/usr/bin/env bash
# The rest of the CLI on VHDX, with qemu-img as the oracle: convert to it
# (dynamic, fixed, block sizes) and from it (a differencing chain too),
# compare, dd and bench print and exit as qemu-img does, measure holds
# what convert makes; what
# qemu-img refuses for VHDX (measure -O vhdx, amend) imgfs refuses alike,
# in one line.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io
need_tool "$IMGFS"
tmpdir
cd "$T"
M=$MiB

qcreate -f qcow2 a.qcow2 $((64 * M + 512))
qio a.qcow2 qcow2 "write -P 7 1M 3M" "write -P 9 $((40 * M + 100)) 100k" "write -P 5 $((64 * M - 512)) 1024"
qemu-img convert -O raw a.qcow2 a.raw

echo "== convert to VHDX"
for opts in "" "block_size=1M" "subformat=fixed,block_size=8M" "log_size=2M,block_state_zero=off"; do
    rm -f c.vhdx
    "$IMGFS" convert -O vhdx ${opts:+-o "$opts"} a.qcow2 c.vhdx || fail "convert -O vhdx -o '$opts' failed"
    qemu-img check -q c.vhdx || fail "convert -o '$opts': qemu-img check"
    qemu-img compare -q -f raw -F vhdx a.raw c.vhdx || fail "convert -o '$opts': content differs"
    bs=$(qemu-img info --output=json c.vhdx | python3 -c 'import json,sys; print(json.load(sys.stdin)["cluster-size"])')
    case $opts in *block_size=1M*) [ "$bs" = $M ] || fail "block_size=1M made $bs" ;; esac
done
echo "   4 option sets: qemu-img check clean, content equal"

echo "== convert from VHDX, a differencing chain resolved"
qemu-img convert -O vhdx a.qcow2 base.vhdx
"$IMGFS" create -q -f vhdx -b base.vhdx -F vhdx top.vhdx
"$IMGWRITE" top.vhdx $((2 * M + 7)) 0x42 5000 >/dev/null
cp a.raw want.raw
printf '\x42%.0s' $(seq 5000) | dd of=want.raw bs=1 seek=$((2 * M + 7)) conv=notrunc status=none
for of in raw qcow2 vmdk vhdx; do
    rm -f out.$of
    "$IMGFS" convert -f vhdx -O $of top.vhdx out.$of || fail "convert of the chain to $of failed"
    qemu-img compare -q -f raw -F $of want.raw out.$of || fail "the chain converted to $of differs"
    [ $of = raw ] || qemu-img check -q out.$of || fail "the chain converted to $of: check"
done
echo "   to raw, qcow2, vmdk, vhdx: the chain's content"

echo "== compare, measure, dd, bench, amend as qemu-img"
qemu-img convert -O vhdx a.qcow2 d.vhdx
cp d.vhdx e.vhdx
qio e.vhdx vhdx "write -P 1 $((40 * M + 50)) 1"
same_as_qemu compare a.qcow2 d.vhdx
same_as_qemu compare d.vhdx e.vhdx
same_as_qemu compare -s d.vhdx e.vhdx
# qemu-img has no block status for VHDX and measures every block as data;
# imgfs knows the holes. Its figure must hold what convert writes, and not
# exceed qemu's; the fully allocated size is qemu's.
"$IMGFS" convert -f vhdx -O qcow2 d.vhdx m.qcow2
python3 - "$(qemu-img measure --output=json -O qcow2 d.vhdx)" "$("$IMGFS" measure --output=json -O qcow2 d.vhdx)" \
    "$(stat -c %s m.qcow2)" <<'PY' || fail "measure -O qcow2 of a VHDX"
import json, sys
q, i, made = json.loads(sys.argv[1]), json.loads(sys.argv[2]), int(sys.argv[3])
if not made <= i["required"] <= q["required"]:
    sys.exit(f"required {i['required']}: not between the converted file's {made} and qemu's {q['required']}")
if i["fully-allocated"] != q["fully-allocated"]:
    sys.exit(f"fully-allocated {i['fully-allocated']}, qemu's {q['fully-allocated']}")
PY
same_as_qemu measure -O raw d.vhdx
errs_as_qemu measure -O vhdx a.qcow2
for ops in "bs=1M count=3" "bs=64k skip=30 count=40" "bs=1000 count=9 skip=3"; do
    for of in raw vhdx; do
        rm -f q.out i.out
        # shellcheck disable=SC2086
        qemu-img dd -f vhdx -O $of $ops if=d.vhdx of=q.out
        # shellcheck disable=SC2086
        "$IMGFS" dd -f vhdx -O $of $ops if=d.vhdx of=i.out || fail "dd -O $of $ops failed"
        qemu-img compare -q -f $of -F $of i.out q.out || fail "dd -O $of $ops: differs from qemu-img dd's"
        [ $of = raw ] || qemu-img check -q i.out || fail "dd -O $of $ops: check"
    done
done
untimed() { sed 's/Run completed in [0-9.]* seconds\./Run completed./'; }
for args in "-c 200" "-c 60 -s 64k -S 1M" "-c 50 -w --pattern=3 -s 16k"; do
    cp d.vhdx b.vhdx
    # shellcheck disable=SC2086
    q=$(qemu-img bench -f vhdx $args b.vhdx 2>&1 | untimed)
    cp d.vhdx b.vhdx
    # shellcheck disable=SC2086
    i=$("$IMGFS" bench -f vhdx $args b.vhdx 2>&1 | untimed)
    [ "${i//imgfs/qemu-img}" = "$q" ] || fail "bench $args: '$i', qemu-img '$q'"
    qemu-img check -q b.vhdx || fail "bench $args: check"
done
cp d.vhdx b.vhdx
"$IMGFS" bench -q -f vhdx -c 20 -w --pattern=9 -s 64k -S 128k b.vhdx
qemu-io -f vhdx -c "read -P 9 0 64k" -c "read -P 9 $((19 * 128 * 1024)) 64k" b.vhdx >/dev/null ||
    fail "bench -w --pattern=9 did not write its pattern"
errs_as_qemu amend -o log_size=2M d.vhdx
errs_as_qemu amend -o block_size=1M d.vhdx
qemu-img compare -q -f raw -F vhdx a.raw d.vhdx || fail "a refused amend changed the disk"
echo "   $SAME_CASES outputs as qemu-img's; dd and bench equal; measure -O vhdx and amend refused alike"
echo "PASS: vhdx cli"
