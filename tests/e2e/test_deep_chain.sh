#!/usr/bin/env bash
# A backing chain of 1,001 qcow2 files (the limit was 64) mounts and reads
# as qemu reads it (and through the imgfs command under a soft limit of
# 512 open files), with data at the bottom, in the middle and on top; a
# write through the mount copies up from 500 layers down, and after
# unmount the top passes qemu-img check and holds what was written.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io cmp
need_fuse
tmpdir

C=$T/chain MNT=$T/mnt
mkdir -p "$C" "$MNT"
log "a chain of 1,001 files"
qemu-img create -q -f qcow2 "$C/l0000.qcow2" 64M
qemu-io -f qcow2 -c "write -P 0x11 0 1M" "$C/l0000.qcow2" >/dev/null
# One overlay made by qemu-img, copied with its backing name changed (the
# names have one length): qemu-img create opens the whole chain each time.
qemu-img create -q -f qcow2 -u -b l0000.qcow2 -F qcow2 "$T/template.qcow2" 64M
"$PY" - "$T/template.qcow2" "$C" 1000 <<'EOF'
import sys
tpl, d, n = open(sys.argv[1], "rb").read(), sys.argv[2], int(sys.argv[3])
assert tpl.count(b"l0000.qcow2") == 1
for i in range(1, n + 1):
    with open("%s/l%04d.qcow2" % (d, i), "wb") as f:
        f.write(tpl.replace(b"l0000.qcow2", b"l%04d.qcow2" % (i - 1)))
EOF
qemu-io -f qcow2 -c "write -P 0x22 4M 64k" "$C/l0500.qcow2" >/dev/null
qemu-io -f qcow2 -c "write -P 0x33 8M 4k" "$C/l1000.qcow2" >/dev/null
[[ $(qemu-img info --backing-chain "$C/l1000.qcow2" | grep -c '^image:') == 1001 ]] || fail "qemu does not see 1,001 files"
to_raw "$C/l1000.qcow2" "$T/want.raw"

log "the command opens the chain under a low soft limit of open files"
# 1,001 files need more than a shell's soft limit of 512: imgfs raises it
# to the hard limit, as the daemon does.
(ulimit -Sn 512; "$IMGFS" compare -q -f qcow2 -F raw "$C/l1000.qcow2" "$T/want.raw") ||
    fail "imgfs compare of the 1,001-file chain failed with a soft limit of 512 descriptors"
echo "   imgfs compare: the chain reads as qemu reads it"

log "mounted: it reads as qemu reads it; a write copies up from 500 layers down"
mount_imgfs "$C/l1000.qcow2" "$MNT"
assert_same "$MNT/l1000.qcow2/disk.raw" "$T/want.raw" "the 1,001-file chain"
head -c 3000 /dev/urandom >"$T/w.bin"
dd if="$T/w.bin" of="$MNT/l1000.qcow2/disk.raw" bs=3000 seek=1 oflag=seek_bytes conv=notrunc,fsync status=none
dd if="$T/w.bin" of="$MNT/l1000.qcow2/disk.raw" bs=3000 seek=$((4 * 1024 * 1024 + 100)) oflag=seek_bytes conv=notrunc,fsync status=none
for off in 1 $((4 * 1024 * 1024 + 100)); do
    dd if="$T/w.bin" of="$T/want.raw" bs=3000 seek="$off" oflag=seek_bytes conv=notrunc status=none
done
assert_same "$MNT/l1000.qcow2/disk.raw" "$T/want.raw" "the chain after two writes"
umount_imgfs "$MNT"
check_clean "$C/l1000.qcow2"
qemu-img compare -q -f raw "$T/want.raw" "$C/l1000.qcow2" || fail "the top after unmount differs from what was written"
echo "PASS: a chain of 1,001 files"
