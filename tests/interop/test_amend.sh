#!/usr/bin/env bash
# `imgfs amend` against `qemu-img amend`: qcow2 lazy_refcounts on and off
# give qemu-img's header (qemu-img info and the header bytes), the disk is
# unchanged and qemu-img check is clean; what qemu-img refuses is refused
# with its exit code. vmdk (qemu-img cannot amend it): adapter_type,
# hwversion, toolsversion read back by qemu-img info, the disk unchanged.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir
cd "$T"

qcreate -f qcow2 a.qcow2 16M
qio a.qcow2 qcow2 "write -P 1 0 1M" "write -P 2 9M 64k"
qemu-img convert -O raw a.qcow2 a.raw
info_json() { qemu-img info --output=json "$1" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["format-specific"])'; }
for opt in lazy_refcounts=on lazy_refcounts=off compat=1.1 "lazy_refcounts=on,compat=1.1"; do
    cp a.qcow2 q.qcow2
    cp a.qcow2 i.qcow2
    qemu-img amend -o "$opt" q.qcow2
    "$IMGFS" amend -o "$opt" i.qcow2 || fail "imgfs amend -o $opt failed"
    [[ $(info_json i.qcow2) == "$(info_json q.qcow2)" ]] || fail "amend -o $opt: $(info_json i.qcow2), qemu-img: $(info_json q.qcow2)"
    cmp -n 104 i.qcow2 q.qcow2 || fail "amend -o $opt: the header differs from qemu-img's"
    qemu-img check -q i.qcow2 || fail "amend -o $opt: check failed"
    qemu-img compare -q i.qcow2 a.raw || fail "amend -o $opt: the disk changed"
done
# writes after lazy_refcounts=on, then off again: still clean
cp a.qcow2 l.qcow2
"$IMGFS" amend -o lazy_refcounts=on l.qcow2
qio l.qcow2 qcow2 "write -P 3 4M 1M"
"$IMGFS" amend -o lazy_refcounts=off l.qcow2
qemu-img check -q l.qcow2 || fail "lazy refcounts on, a write, off: check failed"
qemu-img info l.qcow2 | grep -q "lazy refcounts: false" || fail "lazy_refcounts=off not applied"

qcreate -f qcow2 -o compat=0.10 v2.qcow2 1M
err() { errs_as_qemu amend "$@"; }
err -o lazy_refcounts=on v2.qcow2
err -o lazy_refcounts=maybe a.qcow2
err a.qcow2
err -o lazy_refcounts=on nowhere.qcow2
qcreate -f raw r.raw 1M
err -o size=2M r.raw
"$IMGFS" amend -o help a.qcow2 | grep -q lazy_refcounts || fail "amend -o help lists no lazy_refcounts"

# vmdk: what qemu-img refuses
qcreate -f vmdk d.vmdk 64M
qio d.vmdk vmdk "write -P 4 1M 64k"
qemu-img convert -O raw d.vmdk d.raw
qemu-img amend -o adapter_type=lsilogic d.vmdk 2>/dev/null && fail "qemu-img amend of a vmdk worked: the test no longer shows what it cannot do"
"$IMGFS" amend -o adapter_type=lsilogic,hwversion=7,toolsversion=10240 d.vmdk
qemu-img check -q d.vmdk || fail "vmdk amend: check failed"
qemu-img compare -q d.vmdk d.raw || fail "vmdk amend: the disk changed"
desc=$(strings d.vmdk | grep '^ddb\.')
grep -q 'ddb.adapterType="lsilogic"' <<<"$desc" || fail "vmdk amend: adapter type: $desc"
grep -q 'ddb.geometry.heads="255"' <<<"$desc" || fail "vmdk amend: heads for lsilogic: $desc"
grep -q 'ddb.virtualHWVersion="7"' <<<"$desc" || fail "vmdk amend: hwversion: $desc"
grep -q 'ddb.toolsVersion="10240"' <<<"$desc" || fail "vmdk amend: toolsversion: $desc"
out=$("$IMGFS" amend -o adapter_type=scsi d.vmdk 2>&1) && fail "an unknown adapter type was taken"
[[ $(wc -l <<<"$out") == 1 ]] || fail "unknown adapter type: $out"
echo "amend: all cases agree with qemu-img"
