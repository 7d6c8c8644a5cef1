#!/usr/bin/env bash
# Crash consistency: kill -9 the daemon while writes are in flight.
# Each round: mount (foreground daemon in the background, so we know its pid),
# write a region with dd conv=fsync and record its sha256 after the fsync
# returned, start background writers (python random unaligned pwrites with
# periodic fsync, plus fio if available) elsewhere in the disk, kill -9 the
# daemon after a delay, lazily unmount the dead mount, then:
#   - qemu-img check exits 0 or 3 (leaks allowed, no corruption)
#   - every fsync'd region of this and earlier rounds reads back intact
#     through qemu (qemu-img convert -O raw)
#   - the backing file is untouched
# The image is reused for the next round (it must mount again after a crash).
# Finally `qemu-img check -r leaks` must leave a clean image.
# KILL9_FORMAT=vmdk runs the same rounds on a vmdk child of a vmdk parent
# (test_kill9_vmdk.sh). KILL9_FORMAT=vhdx runs them on a dynamic vhdx
# holding the base's data itself (qemu cannot open a differencing vhdx, so
# could not judge one); after each crash `imgfs check -r all` replays the
# log into the file first, as the next writable open would, for qemu to
# read the result (test_kill9_vhdx.sh). KILL9_FORMAT=luks runs them on a
# qcow2 with a LUKS header inside over a base encrypted with another key,
# both given to the mount by -o keydir and to qemu as secrets
# (test_kill9_luks.sh).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib.sh
source "$HERE/../lib.sh"
# shellcheck source=e2e_lib.sh
source "$HERE/e2e_lib.sh"

need_cmd qemu-img qemu-io dd sha256sum mountpoint
need_fuse
tmpdir

SRC=$T/src MNT=$T/mnt
mkdir -p "$SRC" "$MNT"
M=$((1024 * 1024))
VSIZE=$((64 * M))
read -r -a DELAYS <<< "${KILL9_DELAYS:-0.3 1.0 2.0}"
# fsync'd regions live in [0, 8M): at most 4 rounds
((${#DELAYS[@]} >= 1 && ${#DELAYS[@]} <= 4)) || fail "KILL9_DELAYS: give 1 to 4 delays"
HAVE_FIO=0
command -v fio >/dev/null && HAVE_FIO=1

FMT=${KILL9_FORMAT:-qcow2}
MOUNT_OPTS=()
QSEC=()  # qemu's secrets and --image-opts for vm.FMT and base.FMT (encrypted only)
if [[ $FMT == luks ]]; then
    FMT=qcow2 ENCRYPTED=1
    mkdir -p "$T/keys"
    echo base-pw >"$T/keys/base.qcow2.key"
    echo vm-pw >"$T/keys/vm.qcow2.key"
    MOUNT_OPTS=(-o keydir="$T/keys")
    QSEC=(--object secret,id=b,data=base-pw --object secret,id=v,data=vm-pw --image-opts)
fi
# qemu's spelling of the image at PATH (with its keys where encrypted)
qimg() {
    if [[ ${ENCRYPTED:-0} == 1 && $1 == *vm.qcow2 ]]; then
        echo "driver=qcow2,file.filename=$1,encrypt.key-secret=v,backing.encrypt.key-secret=b"
    elif [[ ${ENCRYPTED:-0} == 1 ]]; then
        echo "driver=qcow2,file.filename=$1,encrypt.key-secret=b"
    else
        echo "$1"
    fi
}
log "creating base + overlay ($FMT${ENCRYPTED:+, encrypted})"
(
    cd "$SRC"
    if [[ ${ENCRYPTED:-0} == 1 ]]; then
        qemu_crypt create -q -f qcow2 "${QSEC[@]:0:4}" -o encrypt.format=luks,encrypt.key-secret=b,encrypt.iter-time=50 base.qcow2 64M
        qemu-io "${QSEC[@]}" "$(qimg base.qcow2)" -c "write -P 0x11 0 $((16 * M))" \
            -c "write -P 0x22 $((40 * M + 3)) $((4 * M))" >/dev/null
        qemu_crypt create -q -f qcow2 "${QSEC[@]:0:4}" -u -b base.qcow2 -F qcow2 \
            -o encrypt.format=luks,encrypt.key-secret=v,encrypt.iter-time=50 vm.qcow2 64M
        exit 0
    fi
    qemu-img create -q -f "$FMT" base.$FMT 64M
    qemu-io -f "$FMT" -c "write -P 0x11 0 $((16 * M))" -c "write -P 0x22 $((40 * M + 3)) $((4 * M))" base.$FMT >/dev/null
    if [[ $FMT == vhdx ]]; then
        mv base.vhdx vm.vhdx
        qemu-img create -q -f raw base.raw 64M  # nothing builds on it: only the backing check below
    else
        qemu-img create -q -f "$FMT" -b base.$FMT -F "$FMT" vm.$FMT
    fi
)
BASE=$SRC/base.$FMT
[[ $FMT == vhdx ]] && BASE=$SRC/base.raw
# to_raw, with the keys of an encrypted image
img_raw() {
    if [[ ${ENCRYPTED:-0} == 1 ]]; then
        qemu-img convert -U "${QSEC[@]}" "$(qimg "$1")" -O raw "$2" || fail "qemu-img convert $1 failed"
    else
        to_raw "$1" "$2"
    fi
}
img_raw "$BASE" "$T/base.before.raw"
DISK=$MNT/vm.$FMT/disk.raw

DAEMON=""
WPIDS=()
kill_all() {
    local p
    for p in "${WPIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
    [[ -n $DAEMON ]] && kill -9 "$DAEMON" 2>/dev/null || true
    if mountpoint -q "$MNT" 2>/dev/null || grep -q " $MNT " /proc/self/mounts; then
        fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
    fi
}
add_cleanup kill_all

# fuse connection id (minor of st_dev) of the mount, for emergency abort
fuse_conn() {
    local d
    d=$(stat -c %d "$MNT")
    echo $(((d & 0xff) | ((d >> 12) & 0xfff00)))
}

start_daemon() { # round
    "$IMGFS" mount -f "${MOUNT_OPTS[@]}" "$SRC" "$MNT" > "$T/daemon.$1.log" 2>&1 &
    DAEMON=$!
    local i
    for i in $(seq 1 200); do
        if mountpoint -q "$MNT" && [[ $(stat -c %s "$DISK" 2>/dev/null || true) == "$VSIZE" ]]; then
            return 0
        fi
        kill -0 "$DAEMON" 2>/dev/null || { cat "$T/daemon.$1.log" >&2; fail "daemon exited during startup (round $1)"; }
        sleep 0.05
    done
    fail "mount not ready after 10 s (round $1)"
}

WRITER=$T/writer.py
cat > "$WRITER" <<'EOF'
import os, random, sys
path, lo, hi, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(seed)
buf = os.urandom(512 * 1024)
fd = os.open(path, os.O_WRONLY)
n = 0
try:
    while True:
        ln = rnd.randint(1, 256 * 1024)
        off = rnd.randrange(lo, hi - ln)
        s = rnd.randrange(0, len(buf) - ln)
        os.pwrite(fd, buf[s:s + ln], off)
        n += 1
        if n % 16 == 0:
            os.fsync(fd)
except OSError as e:
    print(f"writer: stopped after {n} writes: {e}")
EOF

declare -a R_OFF R_LEN R_SUM
round=0
for delay in "${DELAYS[@]}"; do
    round=$((round + 1))
    log "round $round: kill -9 after ${delay}s of writes"
    start_daemon $round
    conn=$(fuse_conn)

    # fsync'd region for this round, inside [0, 8M), unaligned
    off=$(((round - 1) * 2 * M + 12345 * round)) len=$((M + 777 * round))
    head -c "$len" /dev/urandom > "$T/region.$round"
    write_at "$T/region.$round" 0 "$DISK" "$off" "$len" fsync || fail "fsync'd write failed (round $round)"
    R_OFF[round]=$off R_LEN[round]=$len
    R_SUM[round]=$(dd if="$DISK" bs=64K iflag=skip_bytes,count_bytes skip="$off" count="$len" status=none | sha256sum | cut -d' ' -f1)
    [[ ${R_SUM[round]} == $(sha256sum < "$T/region.$round" | cut -d' ' -f1) ]] ||
        fail "fsync'd region does not read back through the mount (round $round)"

    WPIDS=()
    "$PY" "$WRITER" "$DISK" $((8 * M)) $((40 * M)) $round > "$T/writer.$round.log" 2>&1 &
    WPIDS+=($!)
    if ((HAVE_FIO)); then
        fio --name=k9 --filename="$DISK" --rw=randwrite --bsrange=4k-128k --offset=40M --size=24M \
            --ioengine=psync --fsync=8 --time_based --runtime=60 --fallocate=none \
            --allow_file_create=0 --randrepeat=0 > "$T/fio.$round.log" 2>&1 &
        WPIDS+=($!)
    fi
    sleep "$delay"
    kill -0 "$DAEMON" 2>/dev/null || { cat "$T/daemon.$round.log" >&2; fail "daemon died by itself during writes (round $round)"; }
    for p in "${WPIDS[@]}"; do
        kill -0 "$p" 2>/dev/null || { cat "$T"/writer.$round.log "$T"/fio.$round.log 2>/dev/null >&2; fail "a writer stopped before the kill (round $round)"; }
    done
    kill -9 "$DAEMON"
    wait "$DAEMON" 2>/dev/null || true
    DAEMON=""
    fusermount3 -u -z "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || fail "cannot detach the dead mount"
    # writers must now fail (ENOTCONN) and exit; abort the connection if not
    for i in $(seq 1 100); do
        alive=0
        for p in "${WPIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
        ((alive)) || break
        if ((i == 50)) && [[ -w /sys/fs/fuse/connections/$conn/abort ]]; then
            echo 1 > "/sys/fs/fuse/connections/$conn/abort" || true
        fi
        sleep 0.1
    done
    for p in "${WPIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    WPIDS=()
    echo "   $(cat "$T/writer.$round.log")"
    ! mountpoint -q "$MNT" || fail "mount still present after lazy unmount"

    if [[ $FMT == vhdx ]]; then
        out=$("$IMGFS" check -r all "$SRC/vm.vhdx" 2>&1) || { echo "$out" >&2; fail "imgfs check -r all (the log's replay) failed (round $round)"; }
        grep -q "corruptions" <<<"$out" && echo "   imgfs check -r all: the log replayed" || echo "   imgfs check -r all: no log to replay"
    fi
    rc=0
    out=$(qemu-img check "${QSEC[@]}" "$(qimg "$SRC/vm.$FMT")" 2>&1) || rc=$?
    case $rc in
        0) echo "   qemu-img check: clean" ;;
        3) echo "   qemu-img check: leaks only (allowed after a crash)" ;;
        *) echo "$out" >&2; fail "qemu-img check exit $rc after kill -9 (round $round)" ;;
    esac
    img_raw "$SRC/vm.$FMT" "$T/after.raw"
    for ((j = 1; j <= round; j++)); do
        s=$(dd if="$T/after.raw" bs=64K iflag=skip_bytes,count_bytes skip="${R_OFF[j]}" count="${R_LEN[j]}" status=none |
            sha256sum | cut -d' ' -f1)
        [[ $s == "${R_SUM[j]}" ]] || fail "fsync'd region of round $j lost/corrupted after the crash of round $round"
    done
    echo "   fsync'd regions of rounds 1..$round intact"
    img_raw "$BASE" "$T/base.after.raw"
    cmp -s "$T/base.after.raw" "$T/base.before.raw" || fail "backing file modified (round $round)"
done

log "clean mount/umount after the crashes"
mount_imgfs "$SRC" "$MNT" "${MOUNT_OPTS[@]}"
for ((j = 1; j <= round; j++)); do
    s=$(dd if="$DISK" bs=64K iflag=skip_bytes,count_bytes skip="${R_OFF[j]}" count="${R_LEN[j]}" status=none |
        sha256sum | cut -d' ' -f1)
    [[ $s == "${R_SUM[j]}" ]] || fail "fsync'd region of round $j wrong through a fresh mount"
done
umount_imgfs "$MNT"
if [[ $FMT == qcow2 ]]; then  # vmdk has no refcounts: nothing leaks, nothing to repair
    rc=0
    qemu-img check -r leaks "${QSEC[@]}" "$(qimg "$SRC/vm.qcow2")" > "$T/repair.log" 2>&1 || rc=$?
    [[ $rc == 0 ]] || { cat "$T/repair.log" >&2; fail "qemu-img check -r leaks exit $rc"; }
fi
if [[ ${ENCRYPTED:-0} == 1 ]]; then
    qemu-img check "${QSEC[@]}" "$(qimg "$SRC/vm.qcow2")" >/dev/null || fail "qemu-img check of vm.qcow2 not clean at the end"
    echo "   qemu-img check vm.qcow2: clean"
else
    check_clean "$SRC/vm.$FMT"
fi

echo "PASS: kill9"
