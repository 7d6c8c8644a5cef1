#!/usr/bin/env bash
# What convert, dd and create write to: a block device in place (as
# qemu-img), never a FIFO, a character device or one of their own inputs;
# a killed run leaves no file behind, and a temporary name left by an
# older killed run is removed by the next run on the same output.
# SIGUSR1 prints the progress instead of ending the command.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io
need_tool "$IMGFS"
tmpdir
cd "$T"
M=$MiB

qcreate -f qcow2 s.qcow2 8M
qio s.qcow2 qcow2 "write -P 7 0 1M" "write -P 9 5M 64k"
qemu_raw s.qcow2 qcow2 s.want
sum_before=$(sha256sum s.qcow2)

# refused RC_WANT DESCRIPTION CMD...: the command fails with one line on
# stderr naming the cause.
refused() {
    local what=$1
    shift
    if "$@" 2>err.txt; then fail "$what: exit 0"; fi
    [[ $(wc -l <err.txt) -eq 1 ]] || fail "$what: not one line: $(cat err.txt)"
    grep -q "imgfs: " err.txt || fail "$what: no imgfs message: $(cat err.txt)"
}

# --- an output that is one of the inputs ---
refused "convert onto its source" "$IMGFS" convert -O raw s.qcow2 s.qcow2
grep -q "also an input" err.txt || fail "convert onto its source: $(cat err.txt)"
ln s.qcow2 hard.qcow2
refused "convert onto a hard link of its source" "$IMGFS" convert -O qcow2 s.qcow2 hard.qcow2
ln -s s.qcow2 link.qcow2
refused "convert onto a link to its source" "$IMGFS" convert -O raw s.qcow2 link.qcow2
refused "dd onto its source" "$IMGFS" dd -O raw if=s.qcow2 of=s.qcow2
refused "convert -n onto its source" "$IMGFS" convert -n -O qcow2 s.qcow2 s.qcow2
qcreate -f qcow2 -b s.qcow2 -F qcow2 top.qcow2
refused "convert onto a backing file of its source" "$IMGFS" convert -O raw top.qcow2 s.qcow2
refused "create over its own backing file" "$IMGFS" create -f qcow2 -b s.qcow2 -F qcow2 s.qcow2
refused "convert -B onto the backing file" "$IMGFS" convert -O qcow2 -B s.qcow2 -F qcow2 top.qcow2 s.qcow2
[[ $(sha256sum s.qcow2) == "$sum_before" ]] || fail "a refused command changed the source"
[[ -L link.qcow2 ]] || fail "the link was replaced"
qemu-img check -q s.qcow2 || fail "source damaged"

# Through a link to a file that is no input, the file it names is written
# and the link stays, as qemu-img writes through it.
qcreate -f raw other.raw 1M
ln -s other.raw out-link.raw
"$IMGFS" convert -O raw s.qcow2 out-link.raw || fail "convert through a link failed"
[[ -L out-link.raw ]] || fail "convert replaced the link itself"
cmp other.raw s.want || fail "convert through a link: content differs"

# --- outputs that are not files ---
mkfifo fifo
refused "convert onto a FIFO" "$IMGFS" convert -O raw s.qcow2 fifo
[[ -p fifo ]] || fail "the FIFO was replaced"
refused "dd onto a FIFO" "$IMGFS" dd -O raw if=s.qcow2 of=fifo
[[ -p fifo ]] || fail "the FIFO was replaced by dd"
refused "convert onto /dev/full" "$IMGFS" convert -O raw s.qcow2 /dev/full
[[ -c /dev/full ]] || fail "/dev/full is no longer a character device"
mkdir adir
refused "convert onto a directory" "$IMGFS" convert -O raw s.qcow2 adir
[[ -d adir ]] || fail "the directory was replaced"

# --- a block device: written in place, its size checked first ---
LOOP=""
restore_loop() {
    [[ -n $LOOP ]] || return 0
    # A failure that replaced the node puts it back.
    if [[ ! -b $LOOP ]]; then rm -f "$LOOP"; mknod "$LOOP" b 7 "${LOOP#/dev/loop}"; fi
    losetup -d "$LOOP" 2>/dev/null || true
}
trap 'restore_loop; _lib_cleanup' EXIT
if [[ $(id -u) -ne 0 ]] || ! command -v losetup >/dev/null; then
    echo "SKIP (block device part): needs root and losetup"
else
    truncate -s 16M disk.img
    head -c 16M /dev/urandom | tr '\000' '\001' >disk.img # no zeros: holes must be written as zeros
    if LOOP=$(losetup -f --show disk.img 2>/dev/null); then
        "$IMGFS" convert -O raw s.qcow2 "$LOOP" || fail "convert onto $LOOP failed"
        [[ -b $LOOP ]] || fail "convert replaced the block device node $LOOP"
        cmp -n $((8 * M)) "$LOOP" s.want || fail "convert onto $LOOP: content differs"
        "$IMGFS" dd -O raw bs=1M count=2 if=s.qcow2 of="$LOOP" || fail "dd onto $LOOP failed"
        [[ -b $LOOP ]] || fail "dd replaced the block device node"
        refused "convert -O qcow2 onto a block device" "$IMGFS" convert -O qcow2 s.qcow2 "$LOOP"
        qcreate -f raw big.raw 32M
        refused "convert of a larger disk onto a block device" "$IMGFS" convert -O raw big.raw "$LOOP"
        grep -q "smaller" err.txt || fail "the size refusal does not say why: $(cat err.txt)"
        "$IMGFS" create -q -f raw "$LOOP" 8M || fail "create -f raw on a device large enough failed"
        refused "create -f raw on a device too small" "$IMGFS" create -f raw "$LOOP" 100M
        refused "create -f qcow2 on a block device" "$IMGFS" create -f qcow2 "$LOOP" 8M
        [[ -b $LOOP ]] || fail "create replaced the block device node"
        cmp -n $((8 * M)) "$LOOP" s.want || fail "create -f raw on the device changed its content"
    else
        echo "SKIP (block device part): no free loop device"
        LOOP=""
    fi
fi

# --- temporary files ---
# A temporary name that a killed run left (its pid gone) goes at the next
# run on the same output; one of a live run stays.
dead=4000000
while [[ -e /proc/$dead ]]; do dead=$((dead + 1)); done
head -c 1M /dev/zero >"new.raw.imgfs-tmp-$dead-0badf00d"
head -c 1M /dev/zero >"new.raw.imgfs-tmp-$$-0badf00d"
"$IMGFS" convert -O raw s.qcow2 new.raw || fail "convert to new.raw failed"
[[ ! -e new.raw.imgfs-tmp-$dead-0badf00d ]] || fail "a dead run's temporary file was left"
[[ -e new.raw.imgfs-tmp-$$-0badf00d ]] || fail "a live run's temporary file was removed"
rm -f "new.raw.imgfs-tmp-$$-0badf00d"

# A copy held to 1 MiB/s takes about 8 s: SIGUSR1 reaches it while it copies.
qcreate -f qcow2 slow.qcow2 8M
qio slow.qcow2 qcow2 "write -P 5 0 8M"
for p in "" "-p"; do
    rm -f usr1.raw
    # shellcheck disable=SC2086
    "$IMGFS" convert $p -r 1M -O raw slow.qcow2 usr1.raw >usr1.out &
    pid=$!
    until sigcaught $pid; do kill -0 $pid 2>/dev/null || break; sleep 0.05; done
    kill -USR1 $pid
    wait $pid || fail "convert $p ended on SIGUSR1 (exit $?)"
    grep -q '/100%)' usr1.out || fail "convert $p printed no progress on SIGUSR1: $(cat usr1.out)"
    qemu-img compare -q -f qcow2 -F raw slow.qcow2 usr1.raw || fail "convert $p after SIGUSR1: content differs"
done

# kill -9 in the middle of a copy leaves nothing beside the output.
"$IMGFS" convert -r 1M -O qcow2 slow.qcow2 killed.qcow2 &
pid=$!
until sigcaught $pid; do sleep 0.05; done
sleep 1
kill -9 $pid
wait $pid 2>/dev/null || true
left=$(find . -maxdepth 1 -name 'killed.qcow2*')
[[ -z $left ]] || fail "a killed convert left: $left"

echo "PASS: outputs: sources, links, FIFOs, devices and leftovers"
