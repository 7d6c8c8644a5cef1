# shellcheck shell=bash
# Helpers shared by tests/e2e/test_*.sh.  Source it AFTER tests/lib.sh:
#
#   HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
#   source "$HERE/../lib.sh"
#   source "$HERE/e2e_lib.sh"
#
# Not a test itself (the name does not match test_*.sh).

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
: "${IMGFS_BUILD:=$(cd "$E2E_DIR/../.." && pwd)/build}"
: "${IMGFS:=$IMGFS_BUILD/mounttool/imgfs}"
[[ -x $IMGFS ]] || fail "imgfs binary not found or not executable: '$IMGFS' (set IMGFS)"

if [[ -x /usr/bin/python3 ]]; then PY=/usr/bin/python3; else PY=$(command -v python3 || true); fi
[[ -n $PY ]] || skip "python3 not found"

log() { echo "== $*"; }

# add_cleanup CMD: run CMD on exit, BEFORE whatever EXIT trap is already
# installed (tests/lib.sh's tmpdir cleanup, which unmounts and removes $T).
# Use it for things that must be undone before the imgfs mount can go away:
# loop devices, mounts on top of imgfs files, background writers.
add_cleanup() {
    local new=$1 old
    old=$(trap -p EXIT)
    if [[ -n $old ]]; then
        # trap -p prints: trap -- 'CMD' EXIT   (with ' escaped as '\'')
        old=${old#"trap -- '"}
        old=${old%"' EXIT"}
        old=${old//"'\\''"/"'"}
        # shellcheck disable=SC2064
        trap -- "{ $new ; } || true; $old" EXIT
    else
        # shellcheck disable=SC2064
        trap -- "{ $new ; } || true" EXIT
    fi
}

# to_raw IMG OUT: expected guest-visible content of IMG (backing chain
# resolved) as a raw file, computed by qemu.  Format is probed for qcow2
# and vmdk, forced to raw otherwise.
to_raw() {
    local img=$1 out=$2 fmt=raw
    case $(head -c 4 "$img" | od -An -tx1 | tr -d ' \n') in
        514649fb) fmt=qcow2 ;;
        4b444d56 | 23204469) fmt=vmdk ;;  # "KDMV", "# Di(sk DescriptorFile)"
        76686478) fmt=vhdx ;;            # "vhdx(file)"
    esac
    qemu-img convert -U -f "$fmt" -O raw "$img" "$out" || fail "qemu-img convert $img failed"
}

# img_vsize IMG: virtual size in bytes according to qemu-img
img_vsize() {
    qemu-img info -U --output=json "$1" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'
}

# check_clean IMG: qemu-img check must exit 0 (no corruption, no leaks)
check_clean() {
    local out rc=0
    out=$(qemu-img check "$1" 2>&1) || rc=$?
    if [[ $rc -ne 0 ]]; then
        echo "$out" >&2
        fail "qemu-img check $(basename "$1") exit $rc (0 expected: no errors, no leaks)"
    fi
    echo "   qemu-img check $(basename "$1"): clean"
}

# assert_same A B WHAT: byte-identical files (same length too)
assert_same() {
    local a=$1 b=$2 what=$3 sa sb
    sa=$(stat -c %s "$a") || fail "$what: cannot stat $a"
    sb=$(stat -c %s "$b") || fail "$what: cannot stat $b"
    [[ $sa == "$sb" ]] || fail "$what: size $sa != expected $sb"
    if ! cmp "$a" "$b" >/dev/null 2>&1; then
        fail "$what: content differs: $(cmp "$a" "$b" 2>&1 | head -1)"
    fi
    echo "   $what: identical ($sa bytes)"
}

# assert_size FILE N WHAT
assert_size() {
    local s
    s=$(stat -c %s "$1") || fail "$3: cannot stat $1"
    [[ $s == "$2" ]] || fail "$3: st_size $s, expected $2"
}

# write_errno PATH [OFFSET]: try to overwrite the byte at OFFSET (default 0)
# of PATH with the byte that is already there (so a wrongly-successful write
# changes no data; where that byte cannot be read, a zero).  Prints "OK" if
# open+write+fsync succeeded, else the errno name (EROFS, EACCES...).
write_errno() {
    "$PY" - "$1" "${2:-0}" <<'EOF'
import errno, os, sys
p, off = sys.argv[1], int(sys.argv[2])
try:
    try:
        with open(p, "rb") as f:
            f.seek(off)
            b = f.read(1) or b"\0"
    except OSError:
        b = b"\0"
    fd = os.open(p, os.O_WRONLY)
    try:
        os.pwrite(fd, b, off)
        os.fsync(fd)
    finally:
        os.close(fd)
    print("OK")
except OSError as e:
    print(errno.errorcode.get(e.errno, str(e.errno)))
EOF
}

# seek_map_is VIEW MAP_JSON: the data extents SEEK_DATA/SEEK_HOLE give on
# VIEW are those of `qemu-img map --output=json` (adjacent data merged)
seek_map_is() {
    "$PY" - "$1" "$2" <<'EOF'
import json, os, sys
want = []
for e in json.load(open(sys.argv[2])):
    if e["data"]:
        if want and want[-1][1] == e["start"]: want[-1][1] += e["length"]
        else: want.append([e["start"], e["start"] + e["length"]])
fd = os.open(sys.argv[1], os.O_RDONLY)
size, got, pos = os.fstat(fd).st_size, [], 0
while pos < size:
    try: d = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError: break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    got.append([d, h]); pos = h
if got != want: sys.exit("data extents %s, qemu-img map %s" % (got, want))
EOF
}

# mount_alive MNT: the FUSE mount answers (no ENOTCONN / not unmounted)
mount_alive() {
    mountpoint -q "$1" && ls "$1" >/dev/null 2>&1
}

# write_at SRC SRC_OFF DST DST_OFF LEN [extra dd conv flags]:
# copy LEN bytes from SRC@SRC_OFF into DST@DST_OFF in place (conv=notrunc),
# byte offsets, any alignment.
write_at() {
    local src=$1 soff=$2 dst=$3 doff=$4 len=$5 conv=notrunc
    [[ -n ${6:-} ]] && conv+=",$6"
    dd if="$src" of="$dst" bs=64K iflag=skip_bytes,count_bytes oflag=seek_bytes \
        skip="$soff" count="$len" seek="$doff" conv="$conv" status=none
}

# wait_for COND...: until COND holds (5 s at most)
wait_for() {
    local i
    for i in $(seq 1 50); do
        if "$@"; then return 0; fi
        sleep 0.1
    done
    return 1
}

# detach_loop: unmounts $EXT and detaches $LOOP, where set; register it
# with add_cleanup (it runs before the mount's own cleanup).
LOOP=""
detach_loop() {
    if mountpoint -q "$EXT"; then umount "$EXT" || umount -l "$EXT" || true; fi
    if [[ -n $LOOP ]]; then losetup -d "$LOOP" || true; LOOP=""; fi
}

# probe_loop_ext4: skips the test unless a loop device over a plain file
# takes an ext4 that mounts on $EXT (so a failure over imgfs is imgfs's).
# Uses and clears LOOP; the caller registered detach_loop.
probe_loop_ext4() {
    [[ -e /dev/loop-control ]] || skip "no /dev/loop-control"
    truncate -s 16M "$T/probe.img"
    LOOP=$(losetup --find --show "$T/probe.img" 2>/dev/null) || { LOOP=""; skip "losetup cannot attach a loop device"; }
    mkfs.ext4 -q -F "$LOOP" >/dev/null 2>&1 || skip "mkfs.ext4 on a loop device failed"
    mount -t ext4 "$LOOP" "$EXT" 2>/dev/null || skip "cannot mount ext4 from a loop device here"
    detach_loop
    rm -f "$T/probe.img"
}
