#!/usr/bin/env bash
# Raw LUKS images (qemu's "luks" format) against qemu-img and qemu-io:
#  - images qemu makes, in every cipher, mode, IV generator and hash
#    combination qemu 7.2 offers that OpenSSL has, read byte for byte as
#    qemu converts them, and `info` (human and JSON) as qemu-img prints it;
#  - a wrong passphrase is refused, never "decrypted" into garbage; without
#    a key, info still works and reading names the file and the cause;
#  - images imgfs makes (create, convert -O luks, convert -n into one)
#    read in qemu as expected;
#  - secrets as qemu takes them: data, file, base64, and wrapped in
#    AES-256-CBC under a master secret (keyid, iv).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=interop_lib.sh
. "$HERE/interop_lib.sh"

need_cmd qemu-img qemu-io openssl cmp
need_tool "$IMGFS"
tmpdir
cd "$T"

SEC=(--object secret,id=sec0,data=hunter2)
qluks() { qemu_crypt create -q -f luks "${SEC[@]}" -o "key-secret=sec0,iter-time=50,$1" "$2" "$3"; }
opts() { echo "driver=luks,file.filename=$1,key-secret=sec0"; }
qwrite() {  # IMG CMD...: qemu-io writes through the key
    local img=$1 args=() c
    shift
    for c in "$@"; do args+=(-c "$c"); done
    qemu-io "${SEC[@]}" --image-opts "$(opts "$img")" "${args[@]}" >/dev/null || fail "qemu-io on $img"
}
qconvert() { rm -f "$2"; qemu-img convert "${SEC[@]}" --image-opts "$(opts "$1")" -O raw "$2" || fail "qemu-img convert $1"; }

# qemu's images, every variant
variants=(
    ""
    "cipher-alg=aes-128"
    "cipher-alg=aes-192"
    "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256"
    "cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256,hash-alg=sha1"
    "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=plain"  # (qemu 7.2 asserts on aes-192 cbc: key material not whole sectors)
    "cipher-alg=aes-256,cipher-mode=ctr,ivgen-alg=plain64,hash-alg=sha512"
    "cipher-mode=ecb"
    "cipher-alg=cast5-128,cipher-mode=cbc"  # OpenSSL's legacy provider
)
n=0
for v in "${variants[@]}"; do
    n=$((n + 1))
    img=v$n.luks
    qluks "${v:-cipher-alg=aes-256}" "$img" 4M
    qwrite "$img" "write -P 0x5a 1000 70000" "write -P 0x11 2M 1M" "write -P 0x7e 4193792 512"
    qconvert "$img" q$n.raw
    "$IMGFS" convert "${SEC[@]}" --image-opts "$(opts "$img")" -O raw i$n.raw || fail "[$v] imgfs convert failed"
    cmp q$n.raw i$n.raw || fail "[$v] imgfs reads otherwise than qemu"
    diff <(qemu-img info "$img") <("$IMGFS" info "$img") >/dev/null || fail "[$v] info differs: $(diff <(qemu-img info "$img") <("$IMGFS" info "$img"))"
    diff <(qemu-img info --output=json "$img") <("$IMGFS" info --output=json "$img") >/dev/null ||
        fail "[$v] info --output=json differs"
done
echo "qemu's luks images read as qemu converts them (${#variants[@]} variants), info alike"

# a wrong passphrase: refused, nothing written
if out=$("$IMGFS" convert --object secret,id=sec0,data=hunter3 --image-opts "$(opts v1.luks)" -O raw bad.raw 2>&1); then
    fail "a wrong passphrase was accepted"
fi
grep -q "v1.luks.*Invalid password" <<<"$out" || fail "wrong passphrase: $out"
[[ ! -e bad.raw ]] || fail "a refused convert left bad.raw behind"
# no key: info works, reading says why
"$IMGFS" info v1.luks | grep -q "encrypted: yes" || fail "info without a key"
if out=$("$IMGFS" convert -O raw v1.luks nokey.raw 2>&1); then fail "read without a key"; fi
grep -q "v1.luks.*encrypted and no key" <<<"$out" || fail "no key: $out"
[[ ! -e nokey.raw ]] || fail "a refused convert left nokey.raw behind"
# a key given for another file opens nothing else
qluks cipher-alg=aes-256 other.luks 1M
if "$IMGFS" convert "${SEC[@]}" --image-opts "$(opts v1.luks)" -O raw other.raw other.luks 2>/dev/null; then
    fail "the key of v1.luks opened other.luks"
fi

# several key slots: qemu adds a second passphrase; either opens the image
qemu_crypt amend "${SEC[@]}" --object secret,id=sec1,data=second -o state=active,new-secret=sec1,iter-time=50 \
    --image-opts "$(opts v1.luks)" >/dev/null
qemu-img info v1.luks | grep -A1 "\[1\]:" | grep -q "active: true" || fail "qemu did not add key slot 1"
"$IMGFS" convert --object secret,id=sec0,data=second --image-opts "$(opts v1.luks)" -O raw slot1.raw ||
    fail "the second key slot does not open v1.luks"
cmp slot1.raw q1.raw || fail "through key slot 1 v1.luks reads otherwise"
"$IMGFS" convert "${SEC[@]}" --image-opts "$(opts v1.luks)" -O raw slot0.raw || fail "key slot 0 after the amend"
cmp slot0.raw q1.raw || fail "through key slot 0 v1.luks reads otherwise"
echo "several key slots: each passphrase opens the image"

# measure, map, dd and compare, as qemu-img
for o in key-secret=sec0 key-secret=sec0,cipher-alg=aes-128,cipher-mode=cbc \
         key-secret=sec0,cipher-alg=aes-192,cipher-mode=xts,hash-alg=sha512; do
    for out in human json; do
        q=$(qemu_crypt measure "${SEC[@]}" --output=$out -O luks -o "$o" --size 10M)
        [[ $("$IMGFS" measure "${SEC[@]}" --output=$out -O luks -o "$o" --size 10M) == "$q" ]] || fail "measure -o '$o' differs"
    done
done
"$IMGFS" measure -O luks --size 10M 2>/dev/null && fail "measure -O luks without key-secret (qemu-img refuses it)"
for img in v1.luks v4.luks; do
    [[ $("$IMGFS" map "${SEC[@]}" --image-opts "$(opts $img)" --output=json) == \
       "$(qemu-img map "${SEC[@]}" --image-opts "$(opts $img)" --output=json)" ]] || fail "map of $img differs"
done
rm -f dq.raw di.raw
qemu-img dd "${SEC[@]}" --image-opts -O raw "if=$(opts v1.luks)" of=dq.raw bs=64k skip=2 count=20
"$IMGFS" dd "${SEC[@]}" --image-opts -O raw "if=$(opts v1.luks)" of=di.raw bs=64k skip=2 count=20 || fail "imgfs dd"
cmp dq.raw di.raw || fail "dd of a luks image differs from qemu-img's"
"$IMGFS" compare -q "${SEC[@]}" --image-opts "$(opts v1.luks)" "driver=raw,file.filename=q1.raw" ||
    fail "compare: v1.luks differs from its own content"
cp q1.raw q1x.raw
printf 'x' | dd of=q1x.raw bs=1 seek=3000000 conv=notrunc status=none
"$IMGFS" compare -q "${SEC[@]}" --image-opts "$(opts v1.luks)" "driver=raw,file.filename=q1x.raw" && fail "compare missed a byte"
echo "measure, map, dd and compare as qemu-img's"

# imgfs makes, qemu reads
for v in "" "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv" "cipher-alg=aes-192,cipher-mode=xts"; do
    rm -f new.luks
    "$IMGFS" create -q -f luks "${SEC[@]}" -o "key-secret=sec0,iter-time=50${v:+,$v}" new.luks 3M || fail "[$v] imgfs create"
    qemu-img info --output=json new.luks >/dev/null || fail "[$v] qemu-img info of imgfs's luks image"
    [[ $(vsize new.luks) == 3145728 ]] || fail "[$v] virtual size $(vsize new.luks)"
    # imgfs writes into it, qemu reads it back
    head -c 3M /dev/urandom >data.raw
    "$IMGFS" convert "${SEC[@]}" -n --target-image-opts -O raw data.raw "$(opts new.luks)" || fail "[$v] convert -n into luks"
    qconvert new.luks back.raw
    cmp data.raw back.raw || fail "[$v] qemu reads otherwise what imgfs wrote"
done
# create's own refusals, as qemu-img's
if "$IMGFS" create -q -f luks new2.luks 1M 2>/dev/null; then fail "create without key-secret"; fi
[[ ! -e new2.luks ]] || fail "a refused create left new2.luks"
# convert -O luks: a whole new image in one step
qemu-img create -q -f qcow2 plain.qcow2 2M
qemu-io -f qcow2 -c "write -P 0x33 4096 100k" plain.qcow2 >/dev/null
"$IMGFS" convert "${SEC[@]}" -O luks -o key-secret=sec0,iter-time=50 plain.qcow2 out.luks || fail "convert -O luks"
qconvert out.luks o.raw
qemu-img convert -O raw plain.qcow2 p.raw
cmp o.raw p.raw || fail "convert -O luks: qemu reads otherwise"
# a new luks image decrypts its empty payload into noise (in qemu too), so
# the zeros of the source were written, not skipped
qluks cipher-alg=aes-256 empty.luks 1M
qconvert empty.luks e.raw
if cmp -s e.raw <(head -c 1M /dev/zero); then fail "a new luks image reads as zeros: the check above proves nothing"; fi
echo "imgfs's luks images read in qemu as written"

# secrets: file, base64, wrapped
printf 'hunter2' >pw.txt
"$IMGFS" convert --object secret,id=s,file=pw.txt --image-opts driver=luks,file.filename=v1.luks,key-secret=s -O raw f.raw
cmp f.raw q1.raw || fail "file= secret"
"$IMGFS" convert --object "secret,id=s,data=$(printf hunter2 | base64),format=base64" \
    --image-opts driver=luks,file.filename=v1.luks,key-secret=s -O raw b.raw
cmp b.raw q1.raw || fail "base64 secret"
head -c 32 /dev/urandom >master.bin
iv=$(head -c 16 /dev/urandom | base64)
key_hex=$(od -An -tx1 -v master.bin | tr -d ' \n')
iv_hex=$(base64 -d <<<"$iv" | od -An -tx1 -v | tr -d ' \n')
wrapped=$(printf hunter2 | openssl enc -aes-256-cbc -K "$key_hex" -iv "$iv_hex" -a -A)
base64 -w0 master.bin >master.b64
"$IMGFS" convert --object secret,id=m,file=master.b64,format=base64 \
    --object "secret,id=s,data=$wrapped,format=base64,keyid=m,iv=$iv" \
    --image-opts driver=luks,file.filename=v1.luks,key-secret=s -O raw w.raw || fail "wrapped secret"
cmp w.raw q1.raw || fail "wrapped secret read otherwise"
# the same wrapped secret opens the image in qemu too: the test's wrapping is qemu's
qemu-img convert --object secret,id=m,file=master.b64,format=base64 \
    --object "secret,id=s,data=$wrapped,format=base64,keyid=m,iv=$iv" \
    --image-opts driver=luks,file.filename=v1.luks,key-secret=s -O raw qw.raw || fail "qemu: wrapped secret"
cmp qw.raw q1.raw || fail "qemu reads the wrapped secret otherwise"
if out=$("$IMGFS" info --object secret,id=s 2>&1 v1.luks); then fail "secret without data accepted"; fi
grep -q "exactly one of 'data' and 'file'" <<<"$out" || fail "secret without data: $out"
# the passphrase never shows in what imgfs prints
if "$IMGFS" info --output=json v1.luks "${SEC[@]}" 2>&1 | grep -q hunter2; then fail "the passphrase was printed"; fi
echo "secrets: data, file, base64 and wrapped, as qemu takes them"
echo "PASS"
