#!/usr/bin/env bash
# The mount command's contract: clear one-line errors (bad source, busy
# mountpoint, not a directory), --log names every image left out or served
# read-only with the reason (without --log: warnings on the terminal, -f:
# everything on stderr), a single image file as SOURCE, -o passed to FUSE,
# SIGTERM and SIGINT to the daemon and fusermount3 -u unmount and flush,
# and an ordinary user can mount through fusermount3.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$HERE/../lib.sh"
source "$HERE/e2e_lib.sh"
need_cmd qemu-img qemu-io mountpoint
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
qemu-img create -q -f qcow2 "$SRC/base.qcow2" 16M
qemu-io -f qcow2 -c "write -P 0x61 0 1M" "$SRC/base.qcow2" >/dev/null
qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$SRC/top.qcow2"
head -c 100 /dev/zero > "$SRC/junk.qcow2"     # no magic and no raw extension: not a disk, not shown
printf 'QFI\373' > "$SRC/short.qcow2"          # qcow2 magic, truncated: left out with a reason

log "errors are one line naming the cause"
expect_fail() { # WHAT PATTERN CMD...
    local what=$1 pat=$2 out rc=0
    shift 2
    out=$("$@" 2>&1) || rc=$?
    [[ $rc -ne 0 ]] || fail "$what: succeeded"
    [[ $(printf '%s\n' "$out" | wc -l) -eq 1 ]] || fail "$what: expected one line, got: $out"
    grep -qi -- "$pat" <<< "$out" || fail "$what: message does not mention '$pat': $out"
    echo "   $what: $out"
}
expect_fail "missing source" "$T/nope" "$IMGFS" mount "$T/nope" "$MNT"
expect_fail "mountpoint not a directory" "not a directory" "$IMGFS" mount "$SRC" "$SRC/base.qcow2"
expect_fail "missing mountpoint" "$T/nomnt" "$IMGFS" mount "$SRC" "$T/nomnt"
! mountpoint -q "$MNT" || fail "a failed mount left something mounted"

log "--log records left-out and read-only images"
mount_imgfs "$SRC" "$MNT" --log "$T/imgfs.log"
grep -q "short.qcow2" "$T/imgfs.log" || fail "left-out short.qcow2 not logged: $(cat "$T/imgfs.log")"
grep -q "base.qcow2.*read-only.*backing file of top.qcow2" "$T/imgfs.log" || fail "read-only base not logged"
[[ ! -e $MNT/short.qcow2 && ! -e $MNT/junk.qcow2 ]] || fail "broken or non-image files shown"
[[ -e $MNT/top.qcow2/disk.raw && -e $MNT/base.qcow2/disk.raw ]] || fail "images missing from the tree"
grep "short.qcow2" "$T/imgfs.log" | sed 's/^/   log: /'

log "df on the mount: total = the disks' virtual sizes, used = their image files"
read -r total used < <(df -B1 --output=size,used "$MNT" | tail -1)
[[ $total == $((32 * 1024 * 1024)) ]] || fail "df size $total, expected 32 MiB (16M + 16M disks)"
want_used=$(( ($(stat -c %b "$SRC/base.qcow2") + $(stat -c %b "$SRC/top.qcow2")) * 512 / 4096 * 4096 ))
(( used > 0 && used <= want_used + 8192 )) || fail "df used $used, expected about $want_used"
echo "   df: $total bytes, $used used"

log "a busy mountpoint is refused"
expect_fail "busy mountpoint" "busy" "$IMGFS" mount "$SRC" "$MNT"

log "SIGTERM unmounts and flushes"
printf 'sigterm-data' | dd of="$MNT/top.qcow2/disk.raw" bs=1 seek=4096 conv=notrunc status=none
pid=$(pgrep -f "imgfs mount .*$MNT" | head -1)
[[ -n $pid ]] || fail "daemon pid not found"
kill -TERM "$pid"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$pid" 2>/dev/null || fail "daemon still running 10 s after SIGTERM"
! mountpoint -q "$MNT" || fail "still mounted after SIGTERM"
check_clean "$SRC/top.qcow2"
got=$(qemu-io -f qcow2 -c "read -v 4096 12" "$SRC/top.qcow2" | head -1)
grep -q "73 69 67 74 65 72 6d 2d 64 61 74 61" <<< "$got" || fail "data written before SIGTERM not in the image: $got"

log "without --log or -f: what is left out is said on the terminal"
M2=$T/m2
mkdir -p "$M2"
"$IMGFS" mount "$SRC" "$M2" 2> "$T/err" || fail "mount without --log"
_IMGFS_MOUNTS+=("$M2")
grep -q "left out .*short.qcow2" "$T/err" || fail "left-out image not reported on stderr: $(cat "$T/err")"
pid=$(pgrep -f "imgfs mount .*$M2" | head -1)
[[ -n $pid ]] || fail "daemon pid not found"
umount_imgfs "$M2"
# umount returns once the daemon has exited (gone, or a zombie not yet reaped).
state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || true
[[ -z $state || $state == Z ]] || fail "imgfs umount returned while its daemon was still running (state $state)"
echo "   stderr: $(grep short.qcow2 "$T/err")"

log "a single image file as SOURCE, -o noatime passed to FUSE"
mount_imgfs "$SRC/base.qcow2" "$M2" -o noatime
[[ $(ls "$M2") == base.qcow2 ]] || fail "a single-file mount shows: $(ls "$M2")"
to_raw "$SRC/base.qcow2" "$T/base.raw"
assert_same "$M2/base.qcow2/disk.raw" "$T/base.raw" "single-file mount"
grep " $M2 " /proc/mounts | grep -q noatime || fail "-o noatime did not reach the mount: $(grep " $M2 " /proc/mounts)"
echo "   ok; fusermount3 -u unmounts it, the daemon flushes and exits"
printf 'fusermount-data' | dd of="$M2/base.qcow2/disk.raw" bs=1 seek=8192 conv=notrunc status=none
pid=$(pgrep -f "imgfs mount .*$M2" | head -1)
fusermount3 -u "$M2" || fail "fusermount3 -u"
for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$pid" 2>/dev/null || fail "daemon still running 10 s after fusermount3 -u"
check_clean "$SRC/base.qcow2"
qemu-io -f qcow2 -c "read -P 0x66 8192 1" "$SRC/base.qcow2" | grep -q "read 1/1" || fail "write before fusermount3 -u lost"

log "-f: in the foreground, logging to stderr; SIGINT unmounts"
# (a background job of a script starts with SIGINT ignored: restore it)
env --default-signal=INT "$IMGFS" mount -f "$SRC" "$M2" 2> "$T/ferr" &
fpid=$!
_IMGFS_MOUNTS+=("$M2")
for _ in $(seq 1 100); do mountpoint -q "$M2" && break; sleep 0.1; done
mountpoint -q "$M2" || fail "-f mount did not come up: $(cat "$T/ferr")"
grep -q "short.qcow2" "$T/ferr" || fail "-f: left-out image not on stderr"
grep -q "base.qcow2.*read-only" "$T/ferr" || fail "-f: read-only image not on stderr: $(cat "$T/ferr")"
kill -INT "$fpid"
for _ in $(seq 1 100); do kill -0 "$fpid" 2>/dev/null || break; sleep 0.1; done
! kill -0 "$fpid" 2>/dev/null || fail "the -f daemon still runs 10 s after SIGINT"
wait "$fpid" || fail "the -f daemon exited with $? after SIGINT"
! mountpoint -q "$M2" || fail "still mounted after SIGINT"
echo "   stderr had $(wc -l < "$T/ferr") lines; SIGINT unmounted and the daemon exited 0"

log "an ordinary user mounts through fusermount3"
# Debian's udev makes /dev/fuse 0666; where it is not (a bare VM), open it
# for this part and put it back afterwards.
if [[ $(id -u) -eq 0 && $(( 0$(stat -c %a /dev/fuse) & 6 )) -ne 6 ]]; then
    fuse_mode=$(stat -c %a /dev/fuse)
    chmod 666 /dev/fuse
    add_cleanup "chmod $fuse_mode /dev/fuse"
    echo "   (/dev/fuse was mode $fuse_mode: 666 for this test, restored after it)"
fi
if [[ $(id -u) -ne 0 ]]; then
    echo "   (already running as an ordinary user: covered by the mounts above)"
elif ! command -v setpriv >/dev/null || [[ ! -u $(command -v fusermount3) ]]; then
    echo "   SKIP part: setpriv missing or fusermount3 not setuid"
elif [[ $(( 0$(stat -c %a /dev/fuse) & 6 )) -ne 6 ]]; then
    # libfuse opens /dev/fuse itself before it would call fusermount3.
    echo "   SKIP part: /dev/fuse is mode $(stat -c %a /dev/fuse) here, so no ordinary user can use FUSE on this machine"
else
    U=65534  # nobody
    UD=$T/user
    mkdir -p "$UD/src" "$UD/mnt" "$UD/run"
    cp "$SRC/base.qcow2" "$UD/src/solo.qcow2"
    chown -R "$U:$U" "$UD"
    chmod 755 "$T"
    # The build may sit where the user cannot go (a checkout in /root):
    # the user runs a copy of the binary from its own directory.
    cp "$IMGFS" "$UD/imgfs"
    chown "$U:$U" "$UD/imgfs"
    as_user() { setpriv --reuid=$U --regid=$U --clear-groups env XDG_RUNTIME_DIR="$UD/run" HOME="$UD" "$@"; }
    as_user "$UD/imgfs" mount "$UD/src" "$UD/mnt" || fail "mount as uid $U failed"
    _IMGFS_MOUNTS+=("$UD/mnt")
    qemu-img convert -U -O raw "$UD/src/solo.qcow2" "$UD/expect"
    chmod 644 "$UD/expect"
    as_user cmp -n 1048576 "$UD/mnt/solo.qcow2/disk.raw" "$UD/expect" || fail "user mount reads wrong data"
    printf 'user' | as_user dd of="$UD/mnt/solo.qcow2/disk.raw" bs=1 seek=2M conv=notrunc status=none \
        || fail "user cannot write its own image"
    as_user "$UD/imgfs" umount "$UD/mnt" || fail "umount as uid $U failed"
    check_clean "$UD/src/solo.qcow2"
    echo "   uid $U mounted, read, wrote and unmounted"
fi
echo "PASS: mount_cli"
