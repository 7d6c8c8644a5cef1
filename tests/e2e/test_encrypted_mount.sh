#!/usr/bin/env bash
# Encrypted images in a mount: qcow2 with LUKS inside, the legacy AES and
# raw luks, their keys given with --key IMAGE=FILE, -o keydir=DIR, or
# `unlock FILE` written to ctl by the image's owner (the file read with
# that user's rights, not root's):
#  - with its key an image reads as qemu converts it, and what is written
#    through the mount reads back in qemu, its check clean;
#  - without its key (or with a wrong one) it is listed, disk.raw refuses
#    to open with EACCES, user.imgfs.encrypted says "locked" and why, and
#    the log names the file; a wrong key is never "decrypted" into noise;
#  - lock forgets the key; the passphrases show in no log, attribute or
#    info.json.
# Runs as root only: the ctl unlock part needs a second user.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img qemu-io getfattr setpriv cmp
need_fuse
[[ $(id -u) -eq 0 ]] || skip "needs root: the unlock through ctl is tried as uid 65534"
tmpdir
chmod 755 "$T"
U=65534
as_user() { (cd / && setpriv --reuid=$U --regid=$U --clear-groups "$@"); }
SRC=$T/src MNT=$T/mnt KD=$T/keys
mkdir -p "$SRC" "$KD"
chmod 700 "$KD"

# make FMT IMG PASS OPTS...: an encrypted image with some data, its model
make() {
    local fmt=$1 img=$2 pass=$3 o=$4
    qemu_crypt create -q -f "$fmt" --object "secret,id=s,data=$pass" -o "$o" "$SRC/$img" 8M
    local key=key-secret
    [[ $fmt == qcow2 ]] && key=encrypt.key-secret
    qemu-io --object "secret,id=s,data=$pass" --image-opts "driver=$fmt,file.filename=$SRC/$img,$key=s" \
        -c "write -P 0x5a 4096 1M" -c "write -P 0x6b 5M 100k" >/dev/null || fail "qemu-io $img"
    qemu-img convert --object "secret,id=s,data=$pass" --image-opts "driver=$fmt,file.filename=$SRC/$img,$key=s" \
        -O raw "$T/$img.model" || fail "qemu-img convert $img"
}
make qcow2 v.qcow2 pw-v "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=50"
make luks l.luks pw-l "key-secret=s,iter-time=50"
make qcow2 a.qcow2 pw-a "encrypt.format=aes,encrypt.key-secret=s"
make qcow2 w.qcow2 pw-w "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=50"
qemu-img create -q -f qcow2 "$SRC/plain.qcow2" 1M
# A chain whose layers have their own keys; the top is listed first.
make qcow2 zbase.qcow2 pw-b "encrypt.format=luks,encrypt.key-secret=s,encrypt.iter-time=50"
qemu_crypt create -q -f qcow2 --object secret,id=t,data=pw-t -u -b zbase.qcow2 -F qcow2 \
    -o encrypt.format=luks,encrypt.key-secret=t,encrypt.iter-time=50 "$SRC/0top.qcow2" 8M
CHAIN=(--object secret,id=t,data=pw-t --object secret,id=b,data=pw-b --image-opts
       "driver=qcow2,file.filename=$SRC/0top.qcow2,encrypt.key-secret=t,backing.encrypt.key-secret=b")
qemu-io "${CHAIN[@]}" -c "write -P 0x77 2M 1M" >/dev/null || fail "qemu-io on the chain"
qemu-img convert "${CHAIN[@]}" -O raw "$T/0top.qcow2.model" || fail "qemu-img convert of the chain"
chown $U:$U "$SRC/a.qcow2"
echo pw-v >"$KD/v.qcow2.key"          # a trailing newline is not part of the key
echo pw-b >"$KD/zbase.qcow2.key"
echo pw-t >"$KD/0top.qcow2.key"
printf 'not-pw-w' >"$KD/w.qcow2.key"   # wrong
printf 'pw-l' >"$T/l.key"
chmod 600 "$KD"/* "$T/l.key"

LOG=$T/imgfs.log
mount_imgfs "$SRC" "$MNT" -o keydir="$KD" --key l.luks="$T/l.key" --log "$LOG"
attr() { getfattr --absolute-names --only-values -n "user.imgfs.$2" "$MNT/$1/disk.raw"; }

for img in v.qcow2 l.luks 0top.qcow2 zbase.qcow2; do
    cmp "$MNT/$img/disk.raw" "$T/$img.model" || fail "$img reads otherwise than in qemu"
    [[ $(attr $img encrypted) == unlocked ]] || fail "$img: user.imgfs.encrypted $(attr $img encrypted)"
done
[[ $(attr plain.qcow2 encrypted) == no ]] || fail "plain.qcow2: user.imgfs.encrypted $(attr plain.qcow2 encrypted)"
for img in a.qcow2 w.qcow2; do
    [[ -e $MNT/$img/disk.raw ]] || fail "$img without its key is not listed"
    out=$(head -c 1 "$MNT/$img/disk.raw" 2>&1) && fail "$img opened without its key"
    [[ $out == *"Permission denied"* ]] || fail "$img without its key: $out"
    [[ $(attr $img encrypted) == "locked: "*"$img"* ]] || fail "$img: user.imgfs.encrypted $(attr $img encrypted)"
    grep -q "refused to open .*$img" "$LOG" || fail "the log does not say why $img was refused"
done
grep -q "w.qcow2.*Invalid password" "$LOG" || fail "the log does not name the wrong key of w.qcow2"
echo "keys from --key and keydir open their images; without one, or a wrong one: listed, EACCES, said why"

# Writes through the mount, then qemu reads them
dd if=/dev/urandom of="$T/w.bin" bs=64k count=20 status=none
dd if="$T/w.bin" of="$MNT/v.qcow2/disk.raw" bs=64k seek=10 conv=notrunc,fsync status=none
dd if="$T/w.bin" of="$T/v.qcow2.model" bs=64k seek=10 conv=notrunc status=none
printf 'abc' | dd of="$MNT/v.qcow2/disk.raw" bs=1 seek=7000001 conv=notrunc,fsync status=none
printf 'abc' | dd of="$T/v.qcow2.model" bs=1 seek=7000001 conv=notrunc status=none
dd if="$T/w.bin" of="$MNT/l.luks/disk.raw" bs=4096 seek=3 count=50 conv=notrunc,fsync status=none
dd if="$T/w.bin" of="$T/l.luks.model" bs=4096 seek=3 count=50 conv=notrunc status=none
cmp "$MNT/v.qcow2/disk.raw" "$T/v.qcow2.model" || fail "v.qcow2 reads otherwise after the writes"

# ctl unlock, by the image's owner, with the owner's rights
printf 'pw-a' >"$T/root-only.key"
chmod 600 "$T/root-only.key"
mkdir -p "$T/u"
chown $U:$U "$T/u"
as_user sh -c "printf pw-a >$T/u/a.key; printf wrong >$T/u/bad.key; chmod 600 $T/u/a.key $T/u/bad.key"
if as_user sh -c "echo 'unlock $T/root-only.key' >$MNT/a.qcow2/ctl" 2>/dev/null; then
    fail "uid $U unlocked with a key file only root may read"
fi
head -c 1 "$MNT/a.qcow2/disk.raw" >/dev/null 2>&1 && fail "a.qcow2 opened after a refused unlock"
if as_user sh -c "echo 'unlock $T/u/bad.key' >$MNT/a.qcow2/ctl" 2>/dev/null; then
    # The legacy AES has no key check (qemu reads noise too): a wrong key opens it.
    :
fi
as_user sh -c "echo 'lock' >$MNT/a.qcow2/ctl" || fail "lock by the owner"
as_user sh -c "echo 'unlock $T/u/a.key' >$MNT/a.qcow2/ctl" || fail "unlock by the owner: $(cat "$MNT/a.qcow2/ctl")"
cmp "$MNT/a.qcow2/disk.raw" "$T/a.qcow2.model" || fail "a.qcow2 reads otherwise after unlock"
[[ $(attr a.qcow2 encrypted) == unlocked ]] || fail "a.qcow2 after unlock: $(attr a.qcow2 encrypted)"
# still claimed with QEMU's locks, as every image of a read-write mount is
qemu-img info "$SRC/a.qcow2" >/dev/null 2>&1 && fail "a.qcow2 lost the mount's claim with the unlock"
qemu-img info -U "$SRC/a.qcow2" >/dev/null || fail "qemu-img info -U of a.qcow2"
# A wrong key for a LUKS image: refused, the image stays locked
as_user cp "$T/u/bad.key" "$T/u/bad2.key"
if echo "unlock $T/u/bad2.key" >"$MNT/w.qcow2/ctl" 2>/dev/null; then fail "a wrong key unlocked w.qcow2"; fi
grep -q "Invalid password" "$MNT/w.qcow2/ctl" || fail "ctl does not say why the unlock failed: $(cat "$MNT/w.qcow2/ctl")"
[[ $(attr w.qcow2 encrypted) == "locked: "* ]] || fail "w.qcow2 after a wrong unlock: $(attr w.qcow2 encrypted)"
# lock: the key is forgotten, the image refuses again, and so does a view
# opened before it
$PY - "$MNT/v.qcow2" <<'PY' || fail "a view opened before the lock"
import os, sys
fd = os.open(sys.argv[1] + "/disk.raw", os.O_RDONLY)
os.pread(fd, 4096, 0)
with open(sys.argv[1] + "/ctl", "w") as c:
    c.write("lock\n")
for off in (0, 4 << 20):
    try:
        os.pread(fd, 4096, off)
        sys.exit("it still reads at %d after the lock" % off)
    except PermissionError:
        pass
PY
head -c 1 "$MNT/v.qcow2/disk.raw" >/dev/null 2>&1 && fail "v.qcow2 opened after lock"
[[ $(attr v.qcow2 encrypted) == "locked: "* ]] || fail "v.qcow2 after lock: $(attr v.qcow2 encrypted)"
echo "ctl unlock reads the key file with the writer's rights; a wrong LUKS key is refused; lock forgets"

# no passphrase anywhere it could be read
for f in "$LOG" "$MNT"/*/info.json "$MNT"/*/ctl; do
    grep -q "pw-[vlawbt]" "$f" && fail "a passphrase shows in $f"
done
getfattr -d -m - --absolute-names "$MNT"/*/disk.raw 2>/dev/null | grep -q "pw-[vlawbt]" && fail "a passphrase shows in an attribute"
pid=$(pgrep -f "imgfs mount .*$MNT" | head -1)
[[ -n $pid ]] || fail "no daemon found"
[[ -r /proc/$pid/status ]] && grep -q "pw-[vlawbt]" "/proc/$pid/cmdline" && fail "a passphrase on the daemon's command line"

umount_imgfs "$MNT"
qemu-img check -q --object secret,id=s,data=pw-v --image-opts "driver=qcow2,file.filename=$SRC/v.qcow2,encrypt.key-secret=s" ||
    fail "v.qcow2: qemu-img check after the mount's writes"
qemu-img compare --object secret,id=s,data=pw-v --image-opts "driver=qcow2,file.filename=$SRC/v.qcow2,encrypt.key-secret=s" \
    "driver=raw,file.filename=$T/v.qcow2.model" >/dev/null || fail "v.qcow2: qemu reads otherwise what the mount wrote"
qemu-img compare --object secret,id=s,data=pw-l --image-opts "driver=luks,file.filename=$SRC/l.luks,key-secret=s" \
    "driver=raw,file.filename=$T/l.luks.model" >/dev/null || fail "l.luks: qemu reads otherwise what the mount wrote"
echo "what the mount wrote reads back in qemu, check clean"
echo PASS
