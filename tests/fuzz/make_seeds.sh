#!/usr/bin/env bash
# make_seeds.sh OUT_DIR: the seed corpora of the fuzz targets, made now with
# qemu-img / qemu-io / sfdisk (nothing generated is committed), plus the
# qcow2 images of the shared corpus (../shared/corpus, see tests/lib.sh).
# Every seed is at most 1 MiB: a larger image gives its first 1 MiB.
# One directory per seed kind (see targets.txt):
#   qcow2/           whole images          (header and image targets)
#   snapshot_table/  tables cut out of them (seed_tables.py)
#   bitmap_dir/      bitmap directories with their tables, cut out of them
#   partitions/      u64 disk size (LE) + the first bytes of MBR/GPT disks
#   vmdk/            sparse extents (KDMV, COWD, seSparse), whole
#   vmdk_descriptor/ descriptor texts
#   vhdx/            images as sparse records (sparse_records.py)
#   ctl/ size/       text
# Exits 77 (skip) when qemu-img, qemu-io or python3 is missing.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=../lib.sh
. "$HERE/../lib.sh"

[[ $# -eq 1 ]] || { echo "usage: $0 OUT_DIR" >&2; exit 2; }
OUT=$1
need_cmd qemu-img qemu-io python3 head
mkdir -p "$OUT"/{qcow2,snapshot_table,bitmap_dir,partitions,ctl,size,vmdk,vmdk_descriptor,vhdx,luks}
[[ -z $(ls -A "$OUT/qcow2") ]] || fail "$OUT is not empty"
tmpdir
MAX=$((1024 * 1024))

qi() { qemu-img "$@" >/dev/null; }
qio() { qemu-io "$@" >/dev/null; }
keep() { head -c "$MAX" "$1" >"$OUT/qcow2/$2"; }

cd "$T"
echo "== qcow2 images"
# name: create options; then a few writes each
make_img() {
    local name=$1 opts=$2 size=${3:-4M}
    qi create -f qcow2 -o "$opts" "$name.qcow2" "$size"
    qio -f qcow2 -c 'write -P 0x11 0 64k' -c 'write -P 0x22 1000k 8k' -c 'write -z 2M 64k' "$name.qcow2"
}
make_img v2-64k compat=0.10
make_img v3-512 cluster_size=512
make_img v3-4k cluster_size=4k
make_img v3-2m cluster_size=2M 8M
make_img v3-refcount1 refcount_bits=1
make_img v3-refcount64 refcount_bits=64,cluster_size=4k
make_img v3-lazy lazy_refcounts=on
make_img v3-extl2-32k extended_l2=on,cluster_size=32k
qio -f qcow2 -c 'write -P 0x33 40k 3k' v3-extl2-32k.qcow2  # partial subclusters
make_img v3-zstd compression_type=zstd
make_img v3-prealloc preallocation=metadata,cluster_size=64k
# Encrypted, with the passphrase the fuzz target knows ("fuzz"): LUKS with
# a small header (aes-128-cbc), and the legacy AES.
enc_img() {
    local name=$1 opts=$2 made=0 try
    for try in $(seq 1 30); do  # qemu's PBKDF2 timing: see the LUKS seeds below
        rm -f "$name.qcow2"
        qemu-img create -q -f qcow2 --object secret,id=s,data=fuzz -o "encrypt.key-secret=s,$opts" "$name.qcow2" 1M \
            >/dev/null 2>&1 && { made=1; break; }
    done
    [[ $made == 1 ]] || { echo "qemu-img could not make $name" >&2; exit 1; }
    qio --object secret,id=s,data=fuzz --image-opts "driver=qcow2,file.filename=$name.qcow2,encrypt.key-secret=s" \
        -c 'write -P 0x11 0 8k' -c 'write -P 0x22 300k 5k'
}
enc_img v3-luks encrypt.format=luks,encrypt.cipher-alg=aes-128,encrypt.cipher-mode=cbc,encrypt.iter-time=10,cluster_size=4k
enc_img v3-aes encrypt.format=aes,cluster_size=4k

head -c 1M /dev/urandom >base.raw
head -c 256k /dev/zero >>base.raw
qi create -f qcow2 -b base.raw -F raw -o cluster_size=4k overlay.qcow2 2M
qio -f qcow2 -c 'write -P 0x44 4k 4k' overlay.qcow2

# Compressed clusters, zlib and zstd.
qi convert -c -O qcow2 -f raw base.raw compressed-zlib.qcow2
qi convert -c -O qcow2 -o compression_type=zstd,cluster_size=4k -f raw base.raw compressed-zstd.qcow2

# Internal snapshots.
for v in 0.10 1.1; do
    qi create -f qcow2 -o compat=$v,cluster_size=4k snaps-$v.qcow2 1M
    qio -f qcow2 -c 'write -P 0x55 0 8k' snaps-$v.qcow2
    qi snapshot -c first snaps-$v.qcow2
    qio -f qcow2 -c 'write -P 0x66 4k 8k' snaps-$v.qcow2
    qi snapshot -c second snaps-$v.qcow2
done

# Dirty bitmaps.
qi create -f qcow2 -o cluster_size=4k bitmaps.qcow2 4M
qi bitmap --add bitmaps.qcow2 b0
qi bitmap --add -g 64k bitmaps.qcow2 b1
qi bitmap --add --disable bitmaps.qcow2 off
qio -f qcow2 -c 'write -P 0x77 0 128k' bitmaps.qcow2
qi create -f qcow2 -o cluster_size=64k bitmaps-64k.qcow2 8M
qio -f qcow2 -c 'write -P 0x77 1M 64k' bitmaps-64k.qcow2
qi bitmap --add bitmaps-64k.qcow2 enabled
qi bitmap --add bitmaps-64k.qcow2 other
qi bitmap --clear bitmaps-64k.qcow2 other  # still a bitmap with no bits

# An external data file (a relative name: the targets never reach it).
qi create -f qcow2 -o data_file=data.raw,cluster_size=4k datafile.qcow2 1M
qi create -f qcow2 -o data_file=data2.raw,data_file_raw=on datafile-raw.qcow2 1M

for f in *.qcow2; do keep "$f" "$f"; done

echo "== vmdk extents and descriptors"
mkdir vmdk && (
    cd vmdk
    for sub in monolithicSparse twoGbMaxExtentSparse monolithicFlat; do
        qi create -f vmdk -o subformat=$sub $sub.vmdk 4M
        qio -f vmdk -c 'write -P 0x11 0 64k' -c 'write -P 0x22 1000k 8k' $sub.vmdk
    done
    qi create -f vmdk -o zeroed_grain=on zeroed.vmdk 4M
    qio -f vmdk -c 'write -P 0x11 100 64k' -c 'write -z 1M 128k' zeroed.vmdk
    qi create -f vmdk -b monolithicSparse.vmdk -F vmdk child.vmdk
    head -c 256k /dev/urandom >r.raw && head -c 256k /dev/zero >>r.raw
    qi convert -f raw -O vmdk -o subformat=streamOptimized r.raw qemu-stream.vmdk
    for k in cowd sesparse stream; do python3 "$HERE/../interop/tools/make_vmdk.py" "$k" .; done
)
for f in vmdk/*.vmdk; do
    [[ $f == *-flat.vmdk ]] && continue
    if head -c 4 "$f" | grep -qaE 'KDMV|COWD' || [[ $(head -c 4 "$f" | od -An -tx1 | tr -d ' ') == bebafeca ]]; then
        head -c "$MAX" "$f" >"$OUT/vmdk/$(basename "$f")"
    else
        cp "$f" "$OUT/vmdk_descriptor/$(basename "$f")"
    fi
done
# The descriptors embedded in the sparse files, cut out.
for f in vmdk/monolithicSparse.vmdk vmdk/child.vmdk vmdk/zeroed.vmdk; do
    dd if="$f" bs=512 skip=1 count=20 status=none | tr -d '\000' >"$OUT/vmdk_descriptor/embedded-$(basename "$f")"
done
if [[ -d $IMGFS_CORPUS/vmdk ]]; then
    while IFS= read -r -d '' f; do
        head -c "$MAX" "$f" >"$OUT/vmdk/corpus-$(basename "$f")"
    done < <(find "$IMGFS_CORPUS/vmdk" -type f -name '*.vmdk' -print0 | sort -z)
fi

echo "== vhdx images"
mkdir vhdx && (
    cd vhdx
    qi create -f vhdx -o block_size=1M small-blocks.vhdx 8M
    qi create -f vhdx -o block_size=32M,block_state_zero=off big-blocks.vhdx 100M
    qi create -f vhdx -o subformat=fixed,block_size=1M fixed.vhdx 4M
    for f in small-blocks big-blocks fixed; do
        qio -f vhdx -c 'write -P 0x11 1000 64k' -c 'write -z 2M 64k' -c 'write -P 0x22 3M 4k' $f.vhdx
    done
    cp small-blocks.vhdx pending-log.vhdx
    python3 "$HERE/../interop/tools/vhdx_pending_log.py" pending-log.vhdx $((4 * 1024 * 1024)) $((4 * 1024 * 1024 + 8192))
)
for f in vhdx/*.vhdx; do python3 "$HERE/sparse_records.py" "$f" "$OUT/vhdx/$(basename "$f")"; done
if [[ -d $IMGFS_CORPUS/vhdx ]]; then
    while IFS= read -r -d '' f; do
        case $f in
            *.gz) gzip -dc "$f" | cp --sparse=always /dev/stdin vhdx/corpus.img ;;
            *.bz2) bzip2 -dc "$f" | cp --sparse=always /dev/stdin vhdx/corpus.img ;;
        esac
        python3 "$HERE/sparse_records.py" vhdx/corpus.img "$OUT/vhdx/corpus-$(basename "${f%.*}")"
        rm -f vhdx/corpus.img
    done < <(find "$IMGFS_CORPUS/vhdx" -type f \( -name '*.gz' -o -name '*.bz2' \) -print0 | sort -z)
fi

echo "== the shared corpus ($IMGFS_CORPUS)"
n_corpus=0
if [[ -d $IMGFS_CORPUS/qcow2 ]]; then
    while IFS= read -r -d '' f; do
        name=corpus-$(echo "${f#"$IMGFS_CORPUS"/qcow2/}" | tr '/' '_')
        case $f in
            *.gz) gzip -dc "$f" | head -c "$MAX" >"$OUT/qcow2/${name%.gz}" || true ;;
            *.bz2) bzip2 -dc "$f" | head -c "$MAX" >"$OUT/qcow2/${name%.bz2}" || true ;;
            *) head -c "$MAX" "$f" >"$OUT/qcow2/$name" ;;
        esac
        cp "$f" "$T/$name" 2>/dev/null || true
        n_corpus=$((n_corpus + 1))
    done < <(find "$IMGFS_CORPUS/qcow2" -type f \( -name '*.qcow2' -o -name '*.qcow2.gz' -o -name '*.qcow2.bz2' \) -print0 | sort -z)
fi
echo "$n_corpus corpus images"

echo "== tables cut out of the images"
for f in "$T"/*.qcow2 "$T"/corpus-*; do
    [[ -f $f ]] || continue
    b=$(basename "$f")
    python3 "$HERE/seed_tables.py" snapshots "$f" "$OUT/snapshot_table/$b"
    python3 "$HERE/seed_tables.py" bitmaps "$f" "$OUT/bitmap_dir/$b"
done

echo "== LUKS headers"
# qemu's, in a few ciphers; each seed is the header area (key material
# included) up to the payload. qemu's PBKDF2 timing now and then fails
# ("Unable to get accurate CPU usage"): such a variant is tried again.
n=0
for v in cipher-alg=aes-256 cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv cipher-mode=ecb,hash-alg=sha1; do
    n=$((n + 1))
    made=0
    for try in $(seq 1 30); do
        rm -f l.luks
        qemu-img create -q -f luks --object secret,id=s,data=fuzz -o "key-secret=s,iter-time=10,$v" l.luks 1M \
            >/dev/null 2>&1 && { made=1; break; }
    done
    [[ $made == 1 ]] || { echo "qemu-img could not make a LUKS header ($v)" >&2; exit 1; }
    head -c "$MAX" l.luks >"$OUT/luks/qemu-$n"
done

echo "== partition tables"
# disk_seed DISK NAME [STATED_SIZE]: the size prefix, then the first 64 KiB
# (where every table below lies; the rest reads as zeros).
disk_seed() {
    local size=${3:-$(stat -c %s "$1")}
    python3 -c 'import struct,sys; sys.stdout.buffer.write(struct.pack("<Q", int(sys.argv[1])))' "$size" \
        >"$OUT/partitions/$2"
    head -c 64k "$1" >>"$OUT/partitions/$2"
}
if command -v sfdisk >/dev/null 2>&1; then
    head -c 960k /dev/zero >mbr.raw
    # Small, unaligned partitions so that every EBR lies in the first 64 KiB.
    sfdisk -q -X dos mbr.raw >/dev/null <<'P'
start=4, size=10, type=83
start=16, size=20, type=7
start=40, size=1500, type=5
start=42, size=10, type=82
start=60, size=30, type=83
start=100, size=50, type=c
P
    disk_seed mbr.raw mbr
    disk_seed mbr.raw mbr-huge $((1 << 40))
    head -c 960k /dev/zero >gpt.raw
    sfdisk -q -X gpt gpt.raw >/dev/null <<'P'
start=40, size=200, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4
start=300, size=400, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B
start=800, size=100
P
    disk_seed gpt.raw gpt
    disk_seed gpt.raw gpt-short 100000
else
    echo "sfdisk not installed: no MBR/GPT disks made"
fi
# A disk inside a corpus image (a GPT disk made by mkimg).
for f in "$T"/corpus-*gpt*.qcow2; do
    [[ -f $f ]] || continue
    qemu-img convert -O raw "$f" disk.raw && disk_seed disk.raw "$(basename "$f" .qcow2)"
done
printf '\0\0\0\0\0\0\0\0' >"$OUT/partitions/empty"

echo "== ctl lines and sizes"
i=0
while IFS= read -r line; do
    printf '%s' "$line" >"$OUT/ctl/line-$i"
    i=$((i + 1))
done <<'L'
resize 10G
resize +512M
resize -1G --shrink
snapshot create before-upgrade
snapshot delete 1
snapshot apply before-upgrade
commit
commit --base 2 --drop --rate 10M
check
check --repair leaks
check --repair all
flush
user.imgfs.resize=2G,shrink
user.imgfs.resize=+1G
user.imgfs.snapshot.create=s1
user.imgfs.snapshot.delete=s1
user.imgfs.snapshot.apply=1
user.imgfs.commit=
user.imgfs.commit=1
bogus words here
L
i=0
for s in 0 1 4096 10b 1.5k 512M 1G 2T 3P 15E 16E 1e3 0x10 .5K 1.0000001k 18446744073709551615 inf nan 1Q; do
    printf '%s' "$s" >"$OUT/size/size-$i"
    i=$((i + 1))
done

for d in "$OUT"/*/; do
    echo "$(basename "$d"): $(find "$d" -type f | wc -l) seeds"
done
