#!/usr/bin/env bash
# Sharing images with QEMU: imgfs takes QEMU's image locks, both ways.
#  1. qemu-storage-daemon writes an image first: imgfs serves it read-only,
#     user.imgfs.read_only names the process, writes get EROFS; once qsd
#     is gone, the same mount writes it.
#  2. imgfs mounts an image read-write first (claimed from the mount on):
#     qemu-storage-daemon cannot open it for writing, qemu-img (without -U)
#     cannot open it, and the imgfs CLI refuses to change it, pointing at
#     the mount's ctl file. After imgfs unmounts, QEMU can open it again.
#  3. With -o claim=write an image the mount has not written is free: a VM
#     (qsd) may take it while mounted; imgfs then refuses to write it and
#     says why; once the VM is gone imgfs writes it, reading what the VM
#     wrote.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-storage-daemon getfattr mountpoint
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
QSD_PID=""
# qemu-storage-daemon 7.2 can hang on SIGTERM that comes right after its
# export is mounted; after 5 s its export is detached and it is killed.
stop_qsd() {
    if [[ -n $QSD_PID ]]; then
        kill "$QSD_PID" 2>/dev/null || true
        local i
        for i in $(seq 1 50); do
            kill -0 "$QSD_PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$QSD_PID" 2>/dev/null; then
            echo "   (qemu-storage-daemon did not stop on SIGTERM: killed)"
            fusermount3 -u -z "$T/export" 2>/dev/null || true
            kill -KILL "$QSD_PID" 2>/dev/null || true
        fi
        wait "$QSD_PID" 2>/dev/null || true
        QSD_PID=""
    fi
}
add_cleanup stop_qsd

# start_qsd IMG EXPORT_FILE: qsd with a writable FUSE export of IMG; returns
# qsd's exit status if it quits at once (a refused lock)
start_qsd() {
    : > "$2"
    qemu-storage-daemon --blockdev "driver=file,node-name=f,filename=$1" \
        --blockdev driver=qcow2,node-name=q,file=f \
        --export "type=fuse,id=e,node-name=q,mountpoint=$2,writable=on" > "$T/qsd.log" 2>&1 &
    QSD_PID=$!
    local i
    for i in $(seq 1 50); do
        if ! kill -0 "$QSD_PID" 2>/dev/null; then
            wait "$QSD_PID" || true
            QSD_PID=""
            return 1
        fi
        mountpoint -q "$2" && return 0
        sleep 0.1
    done
    fail "qemu-storage-daemon neither exported $1 nor quit: $(cat "$T/qsd.log")"
}

qemu-img create -q -f qcow2 "$SRC/vm.qcow2" 16M
qemu-img create -q -f qcow2 "$SRC/free.qcow2" 16M

log "1. qemu-storage-daemon has vm.qcow2; then imgfs mounts"
start_qsd "$SRC/vm.qcow2" "$T/export" || fail "qsd could not export vm.qcow2: $(cat "$T/qsd.log")"
mount_imgfs "$SRC" "$MNT" --log "$T/log"
ro=$(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/vm.qcow2/disk.raw")
[[ $ro == "1: in use by qemu-storage-daemon (pid $QSD_PID)"* ]] || fail "read_only reason: '$ro'"
r=$(write_errno "$MNT/vm.qcow2/disk.raw")
[[ $r == EROFS ]] || fail "writing an image qsd holds gave $r"
[[ $(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/free.qcow2/disk.raw") == 0 ]] ||
    fail "free.qcow2 is not writable"
grep -q "vm.qcow2.*qemu-storage-daemon" "$T/log" || fail "the log does not say why vm.qcow2 is read-only"
echo "   $ro"
stop_qsd
ro=$(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/vm.qcow2/disk.raw")
[[ $ro == 0 ]] || fail "vm.qcow2 still read-only after qsd let it go: '$ro'"
printf 'after qsd' | dd of="$MNT/vm.qcow2/disk.raw" bs=1 seek=4096 conv=notrunc,fsync status=none ||
    fail "imgfs cannot write vm.qcow2 after qsd let it go"
echo "   once qsd let it go: writable in the same mount"
umount_imgfs "$MNT"
check_clean "$SRC/vm.qcow2"
[[ $(qemu-io -f qcow2 -c "read -v 4096 9" "$SRC/vm.qcow2" | head -1) == *"after.qsd"* ]] || fail "the write after qsd was lost"

log "2. imgfs has vm.qcow2 mounted read-write; then QEMU and the CLI try"
mount_imgfs "$SRC" "$MNT"
if start_qsd "$SRC/vm.qcow2" "$T/export"; then fail "qemu-storage-daemon exported an image imgfs is writing"; fi
grep -qi "lock" "$T/qsd.log" || fail "qsd failed for another reason: $(cat "$T/qsd.log")"
echo "   qsd: $(head -1 "$T/qsd.log")"
if qemu-img info "$SRC/vm.qcow2" > "$T/out" 2>&1; then fail "qemu-img info opened an image imgfs is writing"; fi
grep -qi "lock" "$T/out" || fail "qemu-img info failed for another reason: $(cat "$T/out")"
qemu-img info -U "$SRC/vm.qcow2" >/dev/null || fail "qemu-img info -U (force share) failed"
for cmd in "resize $SRC/vm.qcow2 +1M" "snapshot -c s $SRC/vm.qcow2" "commit $SRC/vm.qcow2"; do
    # shellcheck disable=SC2086
    if "$IMGFS" $cmd > "$T/out" 2>&1; then fail "imgfs $cmd changed a mounted image"; fi
    grep -q "imgfs (pid .*ctl" "$T/out" || fail "imgfs $cmd: the refusal does not point at the mount's ctl: $(cat "$T/out")"
done
echo "   CLI: $(cat "$T/out")"
"$IMGFS" info "$SRC/vm.qcow2" >/dev/null || fail "imgfs info (read-only) refused a mounted image"
qemu-img create -q -f qcow2 "$T/new.qcow2" 1M && mv "$T/new.qcow2" "$SRC/new.qcow2"
for i in $(seq 1 50); do [[ -d $MNT/new.qcow2 ]] && break; sleep 0.1; done
[[ -d $MNT/new.qcow2 ]] || fail "new.qcow2 did not appear"
if qemu-img info "$SRC/new.qcow2" >/dev/null 2>&1; then fail "an image that appeared in SOURCE is not claimed"; fi
echo "   an image moved into SOURCE is claimed as it appears"
umount_imgfs "$MNT"

log "after unmount QEMU can open it again"
start_qsd "$SRC/vm.qcow2" "$T/export" || fail "qsd cannot export vm.qcow2 after imgfs unmounted: $(cat "$T/qsd.log")"
stop_qsd

log "3. -o claim=write: an image the mount has not written is free for a VM"
mount_imgfs "$SRC" "$MNT" -o claim=write
[[ $(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/free.qcow2/disk.raw") == 0 ]] ||
    fail "free.qcow2 not writable before qsd"
start_qsd "$SRC/free.qcow2" "$T/export" || fail "qsd could not export free.qcow2 while mounted (unwritten): $(cat "$T/qsd.log")"
printf 'from qsd' | dd of="$T/export" bs=1 seek=4096 conv=notrunc,fsync status=none
ro=$(getfattr --absolute-names --only-values -n user.imgfs.read_only "$MNT/free.qcow2/disk.raw")
[[ $ro == "1: in use by qemu-storage-daemon (pid $QSD_PID)"* ]] || fail "free.qcow2 read_only while qsd has it: '$ro'"
r=$(write_errno "$MNT/free.qcow2/disk.raw")
[[ $r == EROFS ]] || fail "writing free.qcow2 while qsd has it gave $r"
echo "   while qsd has it: $ro"
stop_qsd
printf 'from imgfs' | dd of="$MNT/free.qcow2/disk.raw" bs=1 seek=8192 conv=notrunc status=none ||
    fail "imgfs cannot write free.qcow2 after qsd let it go"
[[ $(dd if="$MNT/free.qcow2/disk.raw" bs=1 skip=4096 count=8 status=none) == "from qsd" ]] ||
    fail "the mount does not see what qsd wrote"
umount_imgfs "$MNT"
check_clean "$SRC/free.qcow2"
[[ $(qemu-io -f qcow2 -c "read -v 4096 8" "$SRC/free.qcow2" | head -1) == *"from.qsd"* ]] || fail "qsd's write was lost"
[[ $(qemu-io -f qcow2 -c "read -v 8192 10" "$SRC/free.qcow2" | head -1) == *"from.imgfs"* ]] || fail "imgfs's write was lost"
echo "   after qsd: imgfs wrote it, both writes are in the image"
echo "PASS: locks"
