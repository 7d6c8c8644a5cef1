# shellcheck shell=bash
# Helpers shared by the interop tests in this directory (sourced, not a test).
#
# The interop tests use qemu (qemu-img / qemu-io) as the oracle and drive
# imagecore through small test-only binaries built by the project:
#   $IMGFS_BUILD/tests/interop/imgcat   FILE [OFFSET LENGTH]
#   $IMGFS_BUILD/tests/interop/imgwrite FILE OFFSET PATTERN_BYTE LENGTH
#   $IMGFS_BUILD/tests/interop/imgmap   FILE
# and tools/bitmap_runs.py IMAGE, an independent reader of qcow2 dirty bitmaps,
# and the CLI $IMGFS (create / info).
#
# The sourcing script must have set HERE to its own directory.

ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=../lib.sh
. "$ROOT/tests/lib.sh"

IMGFS_BUILD=${IMGFS_BUILD:-$ROOT/build}
# shellcheck disable=SC2034  # used by the sourcing scripts
{
    IMGFS=${IMGFS:-$IMGFS_BUILD/mounttool/imgfs}
    IMGCAT=$IMGFS_BUILD/tests/interop/imgcat
    IMGWRITE=$IMGFS_BUILD/tests/interop/imgwrite
    IMGMAP=$IMGFS_BUILD/tests/interop/imgmap
    BITMAP_RUNS=$ROOT/tests/interop/tools/bitmap_runs.py
    MiB=$((1024 * 1024))
}

# need_tool PATH...: a project binary the test needs. Missing = build problem = fail.
need_tool() {
    local t
    for t in "$@"; do
        [ -x "$t" ] || fail "project binary not found or not executable: $t (build the tree, or set IMGFS_BUILD)"
    done
}

# qio IMG FMT CMD...: run qemu-io commands on IMG (one -c per CMD), fail on error.
qio() {
    local img=$1 fmt=$2 out
    shift 2
    local args=() c
    for c in "$@"; do args+=(-c "$c"); done
    if ! out=$(qemu-io -f "$fmt" "${args[@]}" "$img" 2>&1); then
        fail "qemu-io on $img failed: $out"
    fi
    # qemu-io reports some failures only in its output
    if grep -qiE 'failed|error' <<<"$out"; then
        fail "qemu-io on $img reported: $out"
    fi
}

# qcreate ARGS...: qemu-img create, quiet, fail on error.
qcreate() {
    qemu-img create -q "$@" || fail "qemu-img create $* failed"
}

# vsize IMG: virtual size according to qemu
vsize() {
    qemu-img info --output=json "$1" |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])'
}

# qemu_raw IMG FMT OUT: guest-visible content according to qemu
qemu_raw() {
    rm -f "$3"
    qemu-img convert -f "$2" -O raw "$1" "$3" || fail "qemu-img convert $1 failed"
}

# pattern_into FILE OFFSET PATTERN LENGTH: write LENGTH bytes of PATTERN at
# OFFSET into the plain file FILE (the model of a guest write).
pattern_into() {
    local file=$1 off=$2 pat=$3 len=$4 oct
    oct=$(printf '\\%03o' $((pat)))
    head -c "$len" /dev/zero | tr '\000' "$oct" |
        dd of="$file" bs=64K seek="$off" oflag=seek_bytes conv=notrunc iflag=fullblock status=none ||
        fail "dd into $file failed"
}

# slice FILE OFFSET LENGTH: bytes [OFFSET, OFFSET+LENGTH) of FILE to stdout
slice() {
    dd if="$1" bs=64K skip="$2" count="$3" iflag=skip_bytes,count_bytes status=none
}

# check_cat IMG EXPECTED_RAW LABEL: full imgcat output == EXPECTED_RAW
check_cat() {
    local img=$1 exp=$2 label=$3 err
    echo "check: imgcat $label == qemu-img convert"
    if ! "$IMGCAT" "$img" >"$T/.cat.out" 2>"$T/.cat.err"; then
        err=$(cat "$T/.cat.err")
        fail "imgcat $label failed: $err"
    fi
    cmp "$exp" "$T/.cat.out" || fail "imgcat $label differs from the qemu-img convert output"
    rm -f "$T/.cat.out" "$T/.cat.err"
}

# check_cat_ranges IMG EXPECTED_RAW LABEL "OFF LEN"...: imgcat IMG OFF LEN == slice
check_cat_ranges() {
    local img=$1 exp=$2 label=$3 r off len size
    shift 3
    size=$(stat -c %s "$exp")
    for r in "$@"; do
        read -r off len <<<"$r"
        # clamp to the virtual size: ranges are computed generically
        if [ "$off" -lt 0 ] || [ "$off" -ge "$size" ]; then continue; fi
        [ $((off + len)) -le "$size" ] || len=$((size - off))
        if ! "$IMGCAT" "$img" "$off" "$len" >"$T/.range.out" 2>"$T/.range.err"; then
            fail "imgcat $label $off $len failed: $(cat "$T/.range.err")"
        fi
        cmp <(slice "$exp" "$off" "$len") "$T/.range.out" ||
            fail "imgcat $label $off $len differs from bytes [$off, $((off + len))) of the qemu-img convert output"
    done
    echo "check: imgcat $label OFFSET LENGTH on $# ranges"
    rm -f "$T/.range.out" "$T/.range.err"
}

# check_map IMG FMT LABEL: imgmap IMG agrees with qemu-img map --output=json
# (data:true -> data, data:false -> zero; adjacent extents of one kind merged).
check_map() {
    local img=$1 fmt=$2 label=$3 size
    echo "check: imgmap $label == qemu-img map"
    size=$(vsize "$img")
    qemu-img map --output=json -f "$fmt" "$img" >"$T/.map.json" || fail "qemu-img map $label failed"
    if ! "$IMGMAP" "$img" >"$T/.map.txt" 2>"$T/.map.err"; then
        fail "imgmap $label failed: $(cat "$T/.map.err")"
    fi
    python3 - "$T/.map.json" "$T/.map.txt" "$size" "$label" <<'EOF' || fail "imgmap $label does not match qemu-img map"
import json, sys

qjson, mtxt, size, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def merge(extents):
    out = []
    for start, length, kind in extents:
        if length == 0:
            continue
        if out and out[-1][2] == kind and out[-1][0] + out[-1][1] == start:
            out[-1][1] += length
        else:
            out.append([start, length, kind])
    return out

def contiguous(extents, who):
    pos = 0
    for start, length, kind in extents:
        if start != pos:
            print(f"{label}: {who}: extent at {start} but previous one ends at {pos}")
            return False
        if length <= 0:
            print(f"{label}: {who}: extent at {start} has length {length}")
            return False
        pos = start + length
    if pos != size:
        print(f"{label}: {who}: extents end at {pos}, virtual size is {size}")
        return False
    return True

q = [(e["start"], e["length"], "data" if e["data"] else "zero") for e in json.load(open(qjson))]
m = []
ok = True
for n, line in enumerate(open(mtxt), 1):
    f = line.split()
    if not f:
        continue
    try:
        if len(f) != 3 or f[2] not in ("data", "zero"):
            raise ValueError
        m.append((int(f[0], 0), int(f[1], 0), f[2]))
    except ValueError:
        print(f"{label}: imgmap line {n} is not 'OFFSET LENGTH data|zero': {line.rstrip()!r}")
        ok = False
if not contiguous(q, "qemu-img map"):
    sys.exit(2)  # the oracle itself is not what this script expects
ok = contiguous(m, "imgmap") and ok
qm, mm = merge(q), merge(m)
if ok and qm != mm:
    ok = False
    print(f"{label}: extents differ (OFFSET LENGTH kind)")
    print("  qemu-img map (merged):")
    for e in qm:
        print("    %d %d %s" % tuple(e))
    print("  imgmap (merged):")
    for e in mm:
        print("    %d %d %s" % tuple(e))
sys.exit(0 if ok else 1)
EOF
    rm -f "$T/.map.json" "$T/.map.txt" "$T/.map.err"
}

# check_map_zeros IMG LABEL: imgmap covers the disk, and every range it
# calls zero reads as zeros in `qemu-img convert -O raw` (for formats that
# qemu-img maps as all data, having no block status for them).
check_map_zeros() {
    local img=$1 label=$2 size
    echo "check: imgmap $label: its zero ranges read as zeros through qemu"
    size=$(vsize "$img")
    "$IMGMAP" "$img" >"$T/.map.txt" 2>"$T/.map.err" || fail "imgmap $label failed: $(cat "$T/.map.err")"
    qemu-img convert -O raw "$img" "$T/.map.raw" || fail "qemu-img convert $label failed (test setup)"
    python3 - "$T/.map.txt" "$T/.map.raw" "$size" "$label" <<'EOF' || fail "imgmap $label calls data zero"
import sys
mtxt, raw, size, label = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
pos, zeros = 0, 0
with open(raw, "rb") as f:
    for line in open(mtxt):
        start, length, kind = line.split()
        start, length = int(start, 0), int(length, 0)
        if start != pos or length <= 0 or kind not in ("data", "zero"):
            sys.exit(f"{label}: imgmap line {line.strip()!r} does not continue at {pos}")
        pos += length
        if kind != "zero":
            continue
        zeros += length
        f.seek(start)
        left = length
        while left:
            b = f.read(min(left, 1 << 20))
            if not b or b.count(0) != len(b):
                sys.exit(f"{label}: imgmap says zero at {start}+{length}, qemu reads data there")
            left -= len(b)
if pos != size:
    sys.exit(f"{label}: imgmap ends at {pos}, virtual size {size}")
print(f"   {zeros} of {size} bytes mapped as zeros, all read as zeros")
EOF
    rm -f "$T/.map.txt" "$T/.map.raw" "$T/.map.err"
}

# qcheck IMG LABEL: qemu-img check must be clean (no corruption, no leaks)
qcheck() {
    local img=$1 label=$2 out rc=0
    echo "check: qemu-img check $label"
    out=$(qemu-img check -f qcow2 "$img" 2>&1) || rc=$?
    [ "$rc" -eq 0 ] || fail "qemu-img check $label exited $rc: $out"
    grep -qi 'leak' <<<"$out" && fail "qemu-img check $label reports leaks: $out"
    return 0
}

# qclean_header IMG LABEL: after imagecore closed the image, qemu sees it as
# neither dirty nor corrupt
qclean_header() {
    local img=$1 label=$2
    qemu-img info --output=json -f qcow2 "$img" | python3 -c '
import json, sys
i = json.load(sys.stdin)
d = i.get("format-specific", {}).get("data", {})
bad = []
if i.get("dirty-flag"): bad.append("dirty-flag is set")
if d.get("corrupt"): bad.append("corrupt bit is set")
if bad:
    print(sys.argv[1] + ": " + ", ".join(bad)); sys.exit(1)
' "$label" || fail "$label left in a bad state after imgwrite"
}

# qcompare EXPECTED_RAW IMG LABEL: qemu-img compare says identical
qcompare() {
    local exp=$1 img=$2 label=$3 out rc=0
    echo "check: qemu-img compare expected.raw $label"
    [ "$(vsize "$img")" = "$(stat -c %s "$exp")" ] || fail "$label: virtual size changed"
    out=$(qemu-img compare -f raw -F qcow2 "$exp" "$img" 2>&1) || rc=$?
    [ "$rc" -eq 0 ] || fail "qemu-img compare $label: exit $rc: $out"
}

# cluster size -> virtual size used by the matrix tests
matrix_size() {
    case $1 in
        512) echo $((4 * MiB)) ;;
        2097152) echo $((64 * MiB)) ;;
        *) echo $((16 * MiB)) ;;
    esac
}

# populate IMG CS SIZE COMPAT: the standard content of a matrix image, written
# with qemu-io: unaligned writes that span cluster boundaries, an overwrite,
# first and last bytes, a discarded range, and (compat 1.1) zero clusters,
# both keeping their allocation (stale data left in the host cluster) and
# unmapped, plus an unaligned zero write into a hole.
populate() {
    local img=$1 cs=$2 S=$3 compat=$4
    local cmds=(
        "write -P 0xab 12345 70000"
        "write -P 0xac 40000 100"
        "write -P 0x11 $((cs - 1)) 2"
        "write -P 0x22 $((3 * cs + 100)) $((2 * cs + 50))"
        "write -P 0x44 0 1"
        "write -P 0x33 $((S - 1000)) 1000"
        "write -P 0x77 $((S / 4)) $((3 * cs))"
        "discard $((S / 4 + cs)) $cs"
        "discard $((S / 4 + 2 * cs + 1)) $((cs / 2))"
        "write -P 0x66 $((S / 2)) $((4 * cs))"
    )
    if [ "$compat" = 1.1 ]; then
        cmds+=(
            "write -z $((S / 2 + cs)) $((2 * cs))"
            "write -z -u $((S / 2 + 3 * cs + 7)) $cs"
            "write -z $((S * 3 / 4 + 5)) $((cs + 10))"
        )
    fi
    qio "$img" qcow2 "${cmds[@]}"
}

# standard_ranges CS SIZE: "OFF LEN" pairs for partial imgcat reads of a
# populated matrix image (unaligned, across cluster and region boundaries)
standard_ranges() {
    local cs=$1 S=$2
    printf '%s\n' "0 1" "1 $((cs + 1))" "12340 70010" "40001 98" "$((cs - 1)) 2" \
        "$((3 * cs + 99)) $((cs + 3))" "$((S / 4 + cs - 1)) $((cs + 2))" \
        "$((S / 2 + cs - 3)) $((2 * cs + 6))" "$((S / 2 + 4 * cs - 5)) 20" \
        "$((S - 513)) 513" "$((S - 1)) 1"
}

# same_as_qemu SUBCOMMAND ARGS...: `qemu-img SUBCOMMAND ARGS` and `$IMGFS
# SUBCOMMAND ARGS` print the same (the program's name aside) and exit
# alike. Counts the cases in SAME_CASES.
SAME_CASES=0
same_as_qemu() {
    local q i
    q=$(qemu-img "$@" 2>&1; echo "exit $?")
    i=$("$IMGFS" "$@" 2>&1; echo "exit $?")
    [[ ${i//imgfs:/qemu-img:} == "$q" ]] || {
        diff <(echo "$q") <(echo "$i") | head -20 || true
        fail "imgfs $* differs from qemu-img $*"
    }
    SAME_CASES=$((SAME_CASES + 1))
}

# errs_as_qemu SUBCOMMAND ARGS...: both fail with the same exit code and
# imgfs says it in one line. With NO_FILE=PATH set, neither may leave PATH.
errs_as_qemu() {
    local rc qrc out
    [[ -z ${NO_FILE:-} ]] || rm -f "$NO_FILE"
    qemu-img "$@" >/dev/null 2>&1 && qrc=0 || qrc=$?
    [[ -z ${NO_FILE:-} ]] || rm -f "$NO_FILE"
    out=$("$IMGFS" "$@" 2>&1) && rc=0 || rc=$?
    [[ $rc == "$qrc" && $rc != 0 ]] || fail "$*: exit $rc, qemu-img $qrc"
    [[ $(wc -l <<<"$out") == 1 ]] || fail "$*: not one line: $out"
    [[ -z ${NO_FILE:-} || ! -e $NO_FILE ]] || fail "$*: left $NO_FILE"
}

# sigcaught PID: whether the process is imgfs and has its SIGUSR1 handler
# installed. Between bash's fork and its exec of imgfs the child is still
# bash, and a bash with an EXIT trap catches SIGUSR1 too: a signal sent
# then ends the child (that was the rare CI failure of these tests).
sigcaught() {
    local mask
    [[ $(readlink "/proc/$1/exe" 2>/dev/null) == "$(readlink -f "$IMGFS")" ]] || return 1
    mask=$(awk '/^SigCgt:/ {print $2}' "/proc/$1/status" 2>/dev/null) || return 1
    [[ -n $mask ]] && (((16#$mask >> 9) & 1))
}
