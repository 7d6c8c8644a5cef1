#!/usr/bin/env bash
# Names and requests a hostile (or careless) user can hand the mount:
#  - snapshot names that are not UTF-8 (and control characters) neither abort
#    the daemon nor the CLI: `ls -l`, info.json and `imgfs info --output=json`
#    work, the JSON text of each name is what qemu-img prints, the view file
#    names keep their bytes, and a second image keeps serving;
#  - bad ctl lines and control attributes fail with EINVAL (not EIO, not
#    ENOENT), a huge name is not echoed whole, a name with a newline is
#    refused, and user.imgfs.snapshots keeps one name per line;
#  - `imgfs info` of a FIFO fails at once; a chain that loops is reported
#    as qemu-img reports it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img qemu-io getfattr setfattr timeout
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
qemu-img create -q -f qcow2 "$SRC/a.qcow2" 4M
qemu-io -f qcow2 -c "write -P 0x61 0 1M" "$SRC/a.qcow2" >/dev/null
NAMES=($'caf\xe9' $'a\x01b"\\' $'caf\xc3\xa9\xf0\x9f\x98\x80' $'x\xed\xa0\x80y\xc0\xafz' $'a\xc0\x80b' $'n\xef\xbf\xbfc' $'del\x7f')
for n in "${NAMES[@]}"; do qemu-img snapshot -c "$n" "$SRC/a.qcow2"; done
qemu-img create -q -f qcow2 "$SRC/good.qcow2" 2M
qemu-io -f qcow2 -c "write -P 0x67 0 2M" "$SRC/good.qcow2" >/dev/null

log "imgfs info --output=json prints every name as qemu-img does"
"$IMGFS" info --output=json "$SRC/a.qcow2" > "$T/ours.json" || fail "imgfs info --output=json failed"
qemu-img info --output=json "$SRC/a.qcow2" > "$T/qemu.json"
diff <(grep '"name"' "$T/ours.json") <(grep '"name"' "$T/qemu.json") || fail "snapshot names differ from qemu-img's JSON"
"$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$T/ours.json" || fail "imgfs info --output=json is not JSON"
"$IMGFS" info "$SRC/a.qcow2" > /dev/null || fail "imgfs info (human) failed"
echo "   $(grep -c '"name"' "$T/ours.json") names, the same text as qemu-img's"

mount_imgfs "$SRC" "$MNT" --log "$T/log"
log "the mount serves an image whose snapshot names are not UTF-8"
ls -l "$MNT/a.qcow2" > /dev/null || fail "ls -l of a.qcow2 failed"
"$PY" -c 'import json,sys; json.load(open(sys.argv[1]))' "$MNT/a.qcow2/info.json" || fail "info.json is not JSON"
"$PY" - "$MNT/a.qcow2/snapshots" "${NAMES[@]}" <<'EOF' || fail "snapshot view names do not keep their bytes"
import os, sys
d = os.fsencode(sys.argv[1])
got = set(os.listdir(d))
for n in sys.argv[2:]:
    want = os.fsencode(n) + b".raw"
    if want not in got: sys.exit("missing view %r in %r" % (want, got))
EOF
cmp -n 1048576 "$MNT/a.qcow2/snapshots/"$'caf\xe9'.raw <(head -c 1048576 /dev/zero | tr '\0' a) ||
    fail "the view of snapshot caf\\xe9 reads wrong"
echo "   snapshots/ lists the names as bytes; the views read right"

log "through ctl: a non-UTF-8 name, then a second image still serves"
printf 'snapshot create caf\351-2\n' > "$MNT/a.qcow2/ctl" || fail "ctl snapshot create with a non-UTF-8 name failed"
ls -l "$MNT/a.qcow2/snapshots" > /dev/null
cat "$MNT/a.qcow2/info.json" > /dev/null
cmp "$MNT/good.qcow2/disk.raw" <(head -c 2097152 /dev/zero | tr '\0' g) || fail "good.qcow2 stopped serving"
mount_alive "$MNT" || fail "the mount died"

# errno_of CMD...: the errno name a command's failing write got, from strace-free
# means: python does the write and prints it.
ctl_errno() {
    "$PY" - "$1" "$2" <<'EOF'
import errno, os, sys
try:
    fd = os.open(sys.argv[1], os.O_WRONLY)
    os.write(fd, sys.argv[2].encode("utf-8", "surrogateescape"))
    os.close(fd)
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
EOF
}
xattr_errno() {
    "$PY" - "$1" "$2" "$3" <<'EOF'
import errno, os, sys
try:
    os.setxattr(sys.argv[1], sys.argv[2], sys.argv[3].encode("utf-8", "surrogateescape"))
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
EOF
}

log "bad control requests fail with EINVAL"
for line in "resize abc" "bogus" "commit" "snapshot delete nosuch" "snapshot apply nosuch"; do
    e=$(ctl_errno "$MNT/good.qcow2/ctl" "$line"$'\n')
    [[ $e == EINVAL ]] || fail "ctl '$line': $e, expected EINVAL"
    grep -q "^last: .*error" "$MNT/good.qcow2/ctl" || fail "ctl '$line': no error in the state"
done
for a in user.imgfs.snapshot.delete user.imgfs.snapshot.apply; do
    e=$(xattr_errno "$MNT/good.qcow2/disk.raw" "$a" nosuch)
    [[ $e == EINVAL ]] || fail "$a=nosuch: $e, expected EINVAL"
done
e=$(xattr_errno "$MNT/good.qcow2/disk.raw" user.imgfs.resize abc)
[[ $e == EINVAL ]] || fail "user.imgfs.resize=abc: $e, expected EINVAL"
echo "   5 ctl lines and 3 attributes: EINVAL, reason in ctl"

log "a huge name is not echoed whole; a newline in a name is refused"
big=$(head -c 70000 /dev/zero | tr '\0' n)
e=$(ctl_errno "$MNT/good.qcow2/ctl" "snapshot create $big"$'\n')
[[ $e == EINVAL ]] || fail "a 70,000-character snapshot name: $e, expected EINVAL"
len=$(head -1 "$MNT/good.qcow2/ctl" | wc -c)
((len < 1000)) || fail "ctl echoes the 70,000-character name ($len characters on its line)"
e=$(xattr_errno "$MNT/good.qcow2/disk.raw" user.imgfs.snapshot.create $'two\nlines')
[[ $e == EINVAL ]] || fail "a snapshot name with a newline: $e, expected EINVAL"
qemu-img snapshot -U -l "$SRC/good.qcow2" | grep -q lines && fail "the name with a newline was created"
# One made by qemu-img: listed on one line, the newline escaped.
umount_imgfs "$MNT"
qemu-img snapshot -c $'two\nlines' "$SRC/good.qcow2"
mount_imgfs "$SRC" "$MNT" --log "$T/log"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.snapshots "$MNT/good.qcow2/disk.raw") == 'two\nlines' ]] ||
    fail "user.imgfs.snapshots: a name with a newline is not one line"
echo "   ctl's line: $len characters; newline refused; listed escaped"
umount_imgfs "$MNT"

log "imgfs info on a FIFO fails at once; a looping chain is an error"
mkfifo "$T/fifo"
rc=0; out=$(timeout 5 "$IMGFS" info "$T/fifo" 2>&1) || rc=$?
[[ $rc != 124 ]] || fail "imgfs info FIFO blocked"
[[ $rc != 0 && $out == *"not a regular file"* ]] || fail "imgfs info FIFO: rc $rc, '$out'"
rc=0; timeout 5 "$IMGFS" check "$T/fifo" >/dev/null 2>&1 || rc=$?
[[ $rc != 124 && $rc != 0 ]] || fail "imgfs check FIFO: rc $rc"
qemu-img create -q -f qcow2 "$T/self.qcow2" 1M
qemu-img rebase -q -u -b self.qcow2 -F qcow2 "$T/self.qcow2"
rc=0; out=$("$IMGFS" info --backing-chain "$T/self.qcow2" 2>&1) || rc=$?
[[ $rc != 0 && $out == *"Backing file 'self.qcow2' creates an infinite loop."* ]] ||
    fail "info --backing-chain of a self-backed image: rc $rc, '$out'"
echo "   $out"
check_clean "$SRC/a.qcow2"
check_clean "$SRC/good.qcow2"
echo "PASS: hostile_names"
