#!/usr/bin/env bash
# `imgfs create` against `qemu-img create`: the same command line is run with
# both tools (in two directories), and qemu must see the same image:
# `qemu-img info` agrees on virtual-size, cluster-size, backing-filename,
# backing-filename-format, compat, lazy-refcounts, refcount-bits, extended-l2;
# `qemu-img check` is clean; the content is the same; qemu can then write into
# the new image and it stays clean. Bad input fails with a one-line error
# naming the file or the cause, and leaves no file behind.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io python3 cmp stat
need_tool "$IMGFS"
tmpdir
mkdir "$T/i" "$T/q"   # i: made by imgfs, q: made by qemu-img (reference)

# backing files used by some cases, identical in both directories
for d in i q; do
    (cd "$T/$d" &&
        qcreate -f qcow2 -o cluster_size=4096 base.qcow2 $((100 * MiB + 512)) &&
        qio base.qcow2 qcow2 "write -P 0x42 1M 64K" &&
        qcreate -f raw base.raw 5M &&
        qio base.raw raw "write -P 0x43 0 4096")
done

# info_fields IMG: the fields that must agree, as one JSON object
info_fields() {
    qemu-img info --output=json "$1" | python3 -c '
import json, sys
i = json.load(sys.stdin)
d = i.get("format-specific", {}).get("data", {})
out = {k: i.get(k) for k in ("format", "virtual-size", "cluster-size",
                             "backing-filename", "backing-filename-format", "dirty-flag")}
for k in ("compat", "lazy-refcounts", "refcount-bits", "corrupt", "extended-l2"):
    out["format-specific." + k] = d.get(k)
print(json.dumps(out, sort_keys=True))'
}

# expect_field IMG KEY VALUE: explicit value check (VALUE as JSON)
expect_field() {
    local got
    got=$(info_fields "$1" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)[sys.argv[1]]))' "$2")
    [ "$got" = "$3" ] || fail "$1: $2 is $got, expected $3"
}

# create_both NAME ARGS...: imgfs create ARGS in $T/i, qemu-img create ARGS in $T/q
# (NAME is the image file name that appears in ARGS)
create_both() {
    local name=$1 out rc=0
    shift
    echo "== imgfs create $*"
    out=$(cd "$T/i" && "$IMGFS" create "$@" 2>&1) || rc=$?
    [ "$rc" -eq 0 ] || fail "imgfs create $* exited $rc: $out"
    [ -f "$T/i/$name" ] || fail "imgfs create $* did not create $name"
    (cd "$T/q" && qemu-img create -q "$@") || fail "qemu-img create $* failed (test setup)"
}

# compare_qcow2 NAME: all checks on a qcow2 made by create_both
compare_qcow2() {
    local name=$1 a b vs
    a=$(info_fields "$T/i/$name")
    b=$(info_fields "$T/q/$name")
    echo "check: qemu-img info $name: imgfs-made == qemu-made"
    [ "$a" = "$b" ] || fail "qemu-img info differs for $name
  imgfs create:    $a
  qemu-img create: $b"
    qcheck "$T/i/$name" "$name"
    echo "check: content of $name"
    qemu-img compare -q "$T/q/$name" "$T/i/$name" || fail "$name: content differs from the qemu-made image"
    echo "check: fresh $name has no data clusters of its own"
    qemu-img map --output=json "$T/i/$name" | python3 -c '
import json, sys
own = [e for e in json.load(sys.stdin) if e["depth"] == 0 and e["data"]]
if own:
    print("allocated at creation:", own); sys.exit(1)' || fail "$name: data allocated at creation"
    echo "check: qemu can write into $name and it stays clean"
    vs=$(vsize "$T/i/$name")
    qio "$T/i/$name" qcow2 \
        "write -P 0x5c 1000003 200000" \
        "write -P 0x5d $((vs - 512)) 512" \
        "read -P 0x5c 1000003 200000" \
        "read -P 0x5d $((vs - 512)) 512"
    qcheck "$T/i/$name" "$name after qemu writes"
}

create_both d.qcow2 -f qcow2 d.qcow2 1G
compare_qcow2 d.qcow2
expect_field "$T/i/d.qcow2" virtual-size 1073741824
expect_field "$T/i/d.qcow2" backing-filename null

create_both c512.qcow2 -f qcow2 -o cluster_size=512 c512.qcow2 1G
compare_qcow2 c512.qcow2
expect_field "$T/i/c512.qcow2" cluster-size 512

create_both c2m.qcow2 -f qcow2 -o cluster_size=2M c2m.qcow2 1G
compare_qcow2 c2m.qcow2
expect_field "$T/i/c2m.qcow2" cluster-size 2097152

create_both v2.qcow2 -f qcow2 -o compat=0.10 v2.qcow2 1G
compare_qcow2 v2.qcow2
expect_field "$T/i/v2.qcow2" format-specific.compat '"0.10"'

create_both v2c4k.qcow2 -f qcow2 -o compat=0.10,cluster_size=4096 v2c4k.qcow2 64M
compare_qcow2 v2c4k.qcow2
expect_field "$T/i/v2c4k.qcow2" cluster-size 4096
expect_field "$T/i/v2c4k.qcow2" format-specific.compat '"0.10"'

create_both v3.qcow2 -f qcow2 -o compat=1.1 v3.qcow2 1536K
compare_qcow2 v3.qcow2
expect_field "$T/i/v3.qcow2" format-specific.compat '"1.1"'
expect_field "$T/i/v3.qcow2" virtual-size 1572864

create_both ov.qcow2 -f qcow2 -b base.qcow2 -F qcow2 ov.qcow2
compare_qcow2 ov.qcow2
expect_field "$T/i/ov.qcow2" virtual-size $((100 * MiB + 512))
expect_field "$T/i/ov.qcow2" backing-filename '"base.qcow2"'
expect_field "$T/i/ov.qcow2" backing-filename-format '"qcow2"'

create_both ovbig.qcow2 -f qcow2 -b base.qcow2 -F qcow2 ovbig.qcow2 200M
compare_qcow2 ovbig.qcow2
expect_field "$T/i/ovbig.qcow2" virtual-size $((200 * MiB))

create_both ovraw.qcow2 -f qcow2 -o compat=0.10 -b base.raw -F raw ovraw.qcow2
compare_qcow2 ovraw.qcow2
expect_field "$T/i/ovraw.qcow2" virtual-size $((5 * MiB))
expect_field "$T/i/ovraw.qcow2" backing-filename-format '"raw"'

# absolute backing name: stored as given (each tool gets its own directory's base)
echo "== imgfs create -b ABSOLUTE_PATH"
(cd "$T/i" && "$IMGFS" create -f qcow2 -b "$T/i/base.qcow2" -F qcow2 ovabs.qcow2) ||
    fail "imgfs create -b $T/i/base.qcow2 failed"
expect_field "$T/i/ovabs.qcow2" backing-filename "\"$T/i/base.qcow2\""
expect_field "$T/i/ovabs.qcow2" virtual-size $((100 * MiB + 512))
qcheck "$T/i/ovabs.qcow2" ovabs.qcow2
qemu-img compare -q "$T/i/base.qcow2" "$T/i/ovabs.qcow2" || fail "ovabs.qcow2 does not read as its backing file"

# the image path itself given from another directory, relative backing name:
# the backing name is relative to the new image, not to the cwd
echo "== imgfs create from another cwd: sub/ovsub.qcow2 -b ../base.qcow2"
mkdir "$T/i/sub"
(cd "$T/i" && "$IMGFS" create -f qcow2 -b ../base.qcow2 -F qcow2 sub/ovsub.qcow2) ||
    fail "imgfs create -b ../base.qcow2 sub/ovsub.qcow2 failed"
expect_field "$T/i/sub/ovsub.qcow2" backing-filename '"../base.qcow2"'
expect_field "$T/i/sub/ovsub.qcow2" virtual-size $((100 * MiB + 512))
qcheck "$T/i/sub/ovsub.qcow2" sub/ovsub.qcow2

echo "== imgfs create -f raw"
(cd "$T/i" && "$IMGFS" create -f raw r.raw 64M) || fail "imgfs create -f raw r.raw 64M failed"
echo "check: r.raw is 64 MiB of zeros"
[ "$(stat -c %s "$T/i/r.raw")" = $((64 * MiB)) ] || fail "r.raw has size $(stat -c %s "$T/i/r.raw")"
cmp -n $((64 * MiB)) "$T/i/r.raw" /dev/zero || fail "r.raw is not all zeros"
expect_field "$T/i/r.raw" format '"raw"'
expect_field "$T/i/r.raw" virtual-size $((64 * MiB))

# ---------------------------------------------------------------- bad input
# bad_create WHAT REGEX FILE ARGS...: imgfs create ARGS must fail (exit 1..127),
# print exactly one non-empty line on stderr matching REGEX (case-insensitive),
# and leave no new file in the directory (nor FILE).
bad_create() {
    local what=$1 re=$2 file=$3 rc=0 nlines
    shift 3
    echo "check: imgfs create fails cleanly: $what"
    mkdir -p "$T/bad"
    (cd "$T/bad" && ls -A) >"$T/before.ls"
    (cd "$T/bad" && "$IMGFS" create "$@") >"$T/bad.out" 2>"$T/bad.err" || rc=$?
    [ "$rc" -ne 0 ] || fail "$what: imgfs create $* succeeded"
    [ "$rc" -lt 128 ] || fail "$what: imgfs create $* died with status $rc"
    nlines=$(grep -c . "$T/bad.err" || true)
    [ "$nlines" -eq 1 ] || fail "$what: expected a one-line error on stderr, got $nlines lines: $(cat "$T/bad.err")"
    grep -qiE "$re" "$T/bad.err" || fail "$what: error does not mention /$re/: $(cat "$T/bad.err")"
    (cd "$T/bad" && ls -A) >"$T/after.ls"
    cmp -s "$T/before.ls" "$T/after.ls" || fail "$what: files left behind: $(cd "$T/bad" && ls -A)"
    [ ! -e "$file" ] || fail "$what: $file exists after the failure"
    echo "   error was: $(cat "$T/bad.err")"
}
mkdir -p "$T/bad"
bad_create "nonexistent directory" 'nonexistent-dir' /nonexistent-dir/x.qcow2 \
    -f qcow2 /nonexistent-dir/x.qcow2 1G
bad_create "bad size 1Q" '1Q|size' "$T/bad/q.qcow2" \
    -f qcow2 q.qcow2 1Q
bad_create "missing size, no backing file" 'size' "$T/bad/nosize.qcow2" \
    -f qcow2 nosize.qcow2
bad_create "nonexistent backing file" 'nope\.qcow2' "$T/bad/nob.qcow2" \
    -f qcow2 -b nope.qcow2 -F qcow2 nob.qcow2
bad_create "cluster size not a power of two" 'cluster' "$T/bad/cs.qcow2" \
    -f qcow2 -o cluster_size=1000 cs.qcow2 1M
bad_create "missing size, raw" 'size' "$T/bad/nosize.raw" \
    -f raw nosize.raw

# -o size= and -o help
"$IMGFS" create -q -f qcow2 -o size=3M,cluster_size=4k "$T/osize.qcow2"
[[ $(qemu-img info --output=json "$T/osize.qcow2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["virtual-size"])') == 3145728 ]] ||
    fail "create -o size=3M: wrong size"
for f in qcow2 vmdk raw; do
    "$IMGFS" create -f $f -o help | grep -q "^Supported options:" || fail "create -f $f -o help lists nothing"
done
echo "PASS: create"
