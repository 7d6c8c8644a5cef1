#!/usr/bin/env bash
# Encrypted qcow2 (LUKS inside, and the legacy AES-CBC) against qemu:
#  - qemu's images read byte for byte as qemu converts them, through an
#    internal snapshot too; info (human and JSON) and map as qemu-img's;
#  - imgfs writes into them (whole clusters, partial sectors, in place and
#    allocating) and qemu reads the model, its check clean;
#  - images imgfs creates (create, convert -O qcow2 -o encrypt...) pass
#    qemu-img check and read in qemu as written;
#  - without the key: info and check work, reads and writes are refused
#    naming the file; a wrong key is refused.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io cmp python3
need_tool "$IMGFS" "$IMGWRITE"
tmpdir
cd "$T"

SEC=(--object secret,id=sec0,data=hunter2)
opts() { echo "driver=qcow2,file.filename=$1,encrypt.key-secret=sec0"; }
qenc() {  # OPTS IMG SIZE [qemu-img create args...]
    local o=$1 img=$2 size=$3
    shift 3
    qemu_crypt create -q -f qcow2 "${SEC[@]}" -o "encrypt.key-secret=sec0,$o" "$@" "$img" "$size"
}
qwrite() {
    local img=$1 args=() c
    shift
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io "${SEC[@]}" --image-opts "$(opts "$img")" "${args[@]}" >/dev/null || fail "qemu-io on $img"
}
qraw() { rm -f "$2"; qemu-img convert "${SEC[@]}" --image-opts "$(opts "$1")" -O raw "$2" || fail "qemu-img convert $1"; }
iraw() { rm -f "$2"; "$IMGFS" convert "${SEC[@]}" --image-opts "$(opts "$1")" -O raw "$2" || fail "imgfs convert $1"; }
qchk() { qemu-img check -q "${SEC[@]}" --image-opts "$(opts "$1")" || fail "$2: qemu-img check failed"; }

n=0
for v in "encrypt.format=luks,encrypt.iter-time=50" \
         "encrypt.format=luks,encrypt.iter-time=50,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv" \
         "encrypt.format=aes" "encrypt.format=luks,encrypt.iter-time=50,cluster_size=4k"; do
    n=$((n + 1))
    img=e$n.qcow2
    qenc "$v" "$img" 8M
    qwrite "$img" "write -P 0x5a 1000 70000" "write -P 0x11 3M 1M"
    qemu-img snapshot "${SEC[@]}" --image-opts -c snap "$(opts "$img")" 2>/dev/null ||
        qemu-img snapshot -c snap "$img" || fail "[$v] qemu-img snapshot"
    qwrite "$img" "write -P 0x22 3M 64k" "write -P 0x7e 8387584 512"
    qraw "$img" q.raw
    iraw "$img" i.raw
    cmp q.raw i.raw || fail "[$v] imgfs reads otherwise than qemu"
    # the snapshot, as it was
    rm -f qs.raw is.raw
    qemu-img convert "${SEC[@]}" --image-opts "$(opts "$img")" -l snap -O raw qs.raw || fail "[$v] qemu convert -l"
    "$IMGFS" convert "${SEC[@]}" --image-opts "$(opts "$img")" -l snap -O raw is.raw || fail "[$v] imgfs convert -l"
    cmp qs.raw is.raw || fail "[$v] the snapshot reads otherwise than in qemu"
    cmp -s qs.raw q.raw && fail "[$v] the snapshot reads as the disk: this check proves nothing"
    diff <(qemu-img info -U "$img") <("$IMGFS" info "$img") >/dev/null ||
        fail "[$v] info differs: $(diff <(qemu-img info -U "$img") <("$IMGFS" info "$img"))"
    diff <(qemu-img info -U --output=json "$img") <("$IMGFS" info --output=json "$img") >/dev/null ||
        fail "[$v] info --output=json differs"
    diff <(qemu-img map "${SEC[@]}" --image-opts "$(opts "$img")" --output=json) \
         <("$IMGFS" map "${SEC[@]}" --image-opts "$(opts "$img")" --output=json) >/dev/null || fail "[$v] map differs"

    # imgfs writes: partial sectors, whole clusters, in place and new
    cp q.raw model.raw
    for w in "100 0x41 10" "65530 0x42 20" "200000 0x43 300000" "1048576 0x44 65536" "3000001 0x45 1" \
             "5000000 0x46 2000000"; do
        read -r off pat len <<<"$w"
        IMGWRITE_KEY=hunter2 "$IMGWRITE" "$img" "$off" "$pat" "$len" || fail "[$v] imgwrite $w"
        pattern_into model.raw "$off" "$pat" "$len"
    done
    qchk "$img" "[$v] after imgfs's writes"
    qraw "$img" after.raw
    cmp after.raw model.raw || fail "[$v] qemu reads otherwise what imgfs wrote"
    "$IMGFS" check "$img" >/dev/null || fail "[$v] imgfs check after its writes"
done
echo "qemu's encrypted qcow2 images: read, snapshots, info, map and writes as qemu ($n variants)"

# no key: info and check work, reads and writes refused; a wrong key refused
"$IMGFS" info e1.qcow2 | grep -q "encrypted: yes" || fail "info without a key"
"$IMGFS" check e1.qcow2 >/dev/null || fail "check without a key"
out=$("$IMGFS" convert -O raw e1.qcow2 nokey.raw 2>&1) && fail "read without a key"
grep -q "e1.qcow2.*no key" <<<"$out" || fail "no key: $out"
[[ ! -e nokey.raw ]] || fail "a refused convert left its output"
out=$("$IMGWRITE" e1.qcow2 0 1 512 2>&1) && fail "a write without a key"
grep -q "no key" <<<"$out" || fail "write without a key: $out"
out=$("$IMGFS" convert --object secret,id=sec0,data=wrong --image-opts "$(opts e1.qcow2)" -O raw bad.raw 2>&1) &&
    fail "a wrong key was accepted"
grep -q "Invalid password" <<<"$out" || fail "wrong key: $out"
out=$("$IMGFS" convert --object secret,id=sec0,data=wrong --image-opts "$(opts e3.qcow2)" -O raw bad.raw 2>&1) || true
# (legacy AES has no key check: qemu too reads noise with a wrong one)
qchk e1.qcow2 "after the refusals"
echo "without the key: info and check, reads and writes refused; a wrong LUKS key refused"

# imgfs creates, qemu reads
head -c 6M /dev/urandom >data.raw
for v in "encrypt.format=luks,encrypt.iter-time=50" "encrypt.format=aes" \
         "encrypt.format=luks,encrypt.iter-time=50,encrypt.cipher-alg=aes-256,encrypt.cipher-mode=cbc,encrypt.ivgen-alg=essiv,encrypt.hash-alg=sha512"; do
    rm -f new.qcow2
    "$IMGFS" create -q -f qcow2 "${SEC[@]}" -o "encrypt.key-secret=sec0,$v" new.qcow2 6M || fail "[$v] imgfs create"
    qchk new.qcow2 "[$v] new"
    qemu-img info new.qcow2 | grep -q "encrypted: yes" || fail "[$v] qemu does not see the encryption"
    "$IMGFS" convert "${SEC[@]}" -n --target-image-opts -O raw data.raw "$(opts new.qcow2)" || fail "[$v] convert -n"
    qchk new.qcow2 "[$v] written"
    qraw new.qcow2 back.raw
    cmp back.raw data.raw || fail "[$v] qemu reads otherwise what imgfs wrote"
done
qemu-img create -q -f qcow2 plain.qcow2 4M
qemu-io -f qcow2 -c "write -P 0x33 4096 100k" -c "write -P 0x34 2M 1M" plain.qcow2 >/dev/null
"$IMGFS" convert "${SEC[@]}" -O qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50 plain.qcow2 out.qcow2 ||
    fail "convert -O qcow2 -o encrypt.format=luks"
qchk out.qcow2 "convert -O qcow2 encrypted"
qraw out.qcow2 o.raw
qemu-img convert -O raw plain.qcow2 p.raw
cmp o.raw p.raw || fail "convert into an encrypted qcow2: qemu reads otherwise"
if "$IMGFS" convert -c "${SEC[@]}" -O qcow2 -o encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=50 \
    plain.qcow2 c.qcow2 2>/dev/null; then fail "compressed clusters in an encrypted image"; fi
[[ ! -e c.qcow2 ]] || fail "a refused convert left c.qcow2"
echo "imgfs's encrypted qcow2 images pass qemu-img check and read in qemu as written"

# A chain whose layers have different keys: backing.encrypt.key-secret, as qemu takes it
SEC2=(--object secret,id=b,data=base-pw --object secret,id=t,data=top-pw)
qemu_crypt create -q -f qcow2 "${SEC2[@]}" -o encrypt.format=luks,encrypt.key-secret=b,encrypt.iter-time=50 base.qcow2 8M
qemu_crypt create -q -f qcow2 "${SEC2[@]}" -u -b base.qcow2 -F qcow2 \
    -o encrypt.format=luks,encrypt.key-secret=t,encrypt.iter-time=50 top.qcow2 8M
chain="driver=qcow2,file.filename=top.qcow2,encrypt.key-secret=t,backing.encrypt.key-secret=b"
qemu-io "${SEC2[@]}" --image-opts driver=qcow2,file.filename=base.qcow2,encrypt.key-secret=b -c "write -P 1 0 3M" >/dev/null
qemu-io "${SEC2[@]}" --image-opts "$chain" -c "write -P 2 1M 1M" -c "write -P 3 2100000 1000" >/dev/null
qemu-img convert "${SEC2[@]}" --image-opts "$chain" -O raw chain-q.raw
"$IMGFS" convert "${SEC2[@]}" --image-opts "$chain" -O raw chain-i.raw || fail "imgfs convert of the chain"
cmp chain-q.raw chain-i.raw || fail "the chain reads otherwise than in qemu"
out=$("$IMGFS" convert "${SEC2[@]}" --image-opts driver=qcow2,file.filename=top.qcow2,encrypt.key-secret=t -O raw x.raw 2>&1) &&
    fail "the chain read without its base's key"
grep -q "base.qcow2.*no key" <<<"$out" || fail "without the base's key: $out"
# A partial cluster over the base's data needs the base's bytes: refused
# without its key, the top unchanged.
IMGWRITE_KEY=top-pw "$IMGWRITE" top.qcow2 500000 0x44 1000 2>/dev/null && fail "a copy-on-write from a base without its key"
qemu-img convert "${SEC2[@]}" --image-opts "$chain" -O raw chain-after.raw
cmp chain-q.raw chain-after.raw || fail "a refused write changed the chain"
qemu-img check -q "${SEC2[@]}" --image-opts "$chain" || fail "the chain's check after a refused write"
echo "a chain whose layers have their own keys reads as in qemu"
echo "PASS"
