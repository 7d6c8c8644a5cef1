#!/usr/bin/env bash
# The everyday qemu-img workflows end to end, command for command, with
# imgfs in qemu-img's place; each result judged by qemu-img (check,
# compare, info, map) and, where qemu-img 7.2 can run the same command, set
# beside its output.
#  1. base + diff: create diff on modified, rebase it onto base
#  2. the VMDK merge: rebase disk-c.vmdk from disk-b onto disk-a
#  3. convert a qcow2 overlay of a vmdk chain to a vmdk on disk-a (-B)
#  4. compare two vmdk disks
#  5. map of a delta
#  6. dd of a range
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"
need_cmd qemu-img qemu-io python3
need_tool "$IMGFS"
tmpdir
cd "$T"
held() {  # IMG: the guest clusters the image itself holds (qemu-img map, depth 0)
    qemu-img map --output=json "$1" | python3 -c '
import json, sys
print(sum(e["length"] for e in json.load(sys.stdin) if e["depth"] == 0 and e["present"]))'
}

echo "== 1. base + diff"
qcreate -f qcow2 base.qcow2 64M
qio base.qcow2 qcow2 "write -P 1 0 32M"
qemu-img convert -O qcow2 base.qcow2 modified.qcow2
qio modified.qcow2 qcow2 "write -P 2 4M 128k" "write -P 3 40M 64k" "write -z 10M 64k"
"$IMGFS" create -q -f qcow2 -b modified.qcow2 -F qcow2 diff.qcow2
"$IMGFS" rebase -b base.qcow2 -F qcow2 diff.qcow2
qcheck diff.qcow2 "diff.qcow2 after the rebase"
qemu-img compare -q modified.qcow2 diff.qcow2 || fail "diff.qcow2 does not read as modified.qcow2"
[[ $(held diff.qcow2) == $((128 * 1024 + 65536 + 65536)) ]] || fail "diff.qcow2 holds $(held diff.qcow2) bytes, not just what differs"
echo "   diff.qcow2 holds only the 256 KiB that differ from base.qcow2"

echo "== 2. the VMDK merge"
qcreate -f vmdk disk-a.vmdk 32M
qio disk-a.vmdk vmdk "write -P 4 0 8M"
qcreate -f vmdk -b disk-a.vmdk -F vmdk disk-b.vmdk
qio disk-b.vmdk vmdk "write -P 5 1M 1M"
qcreate -f vmdk -b disk-b.vmdk -F vmdk disk-c.vmdk
qio disk-c.vmdk vmdk "write -P 6 20M 64k"
qemu-img convert -O raw disk-c.vmdk disk-c.raw
cp disk-c.vmdk q-disk-c.vmdk
qemu-img rebase -f vmdk -b disk-a.vmdk -F vmdk q-disk-c.vmdk 2>/dev/null &&
    fail "qemu-img rebase of a vmdk worked: the workflow no longer shows what it cannot do"
"$IMGFS" rebase -f vmdk -b disk-a.vmdk -F vmdk disk-c.vmdk
qemu-img check -q disk-c.vmdk || fail "disk-c.vmdk after the merge: check failed"
qemu-img compare -q -f raw disk-c.raw disk-c.vmdk || fail "disk-c.vmdk reads differently after the merge"
[[ $(qemu-img info --output=json disk-c.vmdk | python3 -c 'import json,sys; print(json.load(sys.stdin)["backing-filename"])') == disk-a.vmdk ]] ||
    fail "disk-c.vmdk is not backed by disk-a.vmdk"
echo "   disk-c.vmdk now builds on disk-a.vmdk, reads as before (qemu-img 7.2 fails this)"

echo "== 3. convert -B to a vmdk"
qcreate -f vmdk -b disk-a.vmdk -F vmdk disk-b2.vmdk
qio disk-b2.vmdk vmdk "write -P 7 3M 1M"
qcreate -f qcow2 -b disk-b2.vmdk -F vmdk disk-c.qcow2
qio disk-c.qcow2 qcow2 "write -P 8 25M 64k"
"$IMGFS" convert -f qcow2 -O vmdk -B disk-a.vmdk -F vmdk disk-c.qcow2 disk-c2.vmdk
qemu-img check -q disk-c2.vmdk || fail "disk-c2.vmdk: check failed"
qemu-img compare -q disk-c.qcow2 disk-c2.vmdk || fail "disk-c2.vmdk does not read as disk-c.qcow2"
[[ $(held disk-c2.vmdk) == $((1024 * 1024 + 65536)) ]] || fail "disk-c2.vmdk holds $(held disk-c2.vmdk) bytes, not what differs from disk-a"
echo "   disk-c2.vmdk holds what differs from disk-a.vmdk"

echo "== 4. compare two vmdk disks"
same_as_qemu compare -f vmdk -F vmdk disk-c.vmdk disk-b.vmdk
same_as_qemu compare -f vmdk -F vmdk disk-c2.vmdk disk-c2.vmdk
echo "   output and exit codes as qemu-img's"

echo "== 5. map of a delta"
qcreate -f qcow2 -b base.qcow2 -F qcow2 delta.qcow2
qio delta.qcow2 qcow2 "write -P 9 1M 64k" "write -z 2M 64k" "discard 3M 64k"
same_as_qemu map delta.qcow2
same_as_qemu map --output=json delta.qcow2
echo "   map as qemu-img's, both forms"

echo "== 6. dd of a range"
qemu-img dd -f qcow2 -O raw bs=64k skip=10 count=100 if=modified.qcow2 of=q-range.raw
"$IMGFS" dd -f qcow2 -O raw bs=64k skip=10 count=100 if=modified.qcow2 of=i-range.raw
cmp q-range.raw i-range.raw || fail "dd of a range differs from qemu-img dd's"
echo "PASS: the qemu-img workflows, with imgfs"
