# Shared by the format benchmarks: serve an image through imgfs or
# qemu-storage-daemon's FUSE export, and settle the page cache between
# measurements. The caller sets W, MNT, IMGFS, QSD, log and die.

# On exit: both servers unmounted and stopped, W removed.
serve_cleanup() {
  set +e
  fusermount3 -u "$MNT" 2>/dev/null; fusermount3 -u "$W/qsd.disk" 2>/dev/null
  [[ -f $W/qsd.pid ]] && kill "$(cat "$W/qsd.pid")" 2>/dev/null
  sleep 0.3
  rm -rf "$W"
}

# serve SUBJ IMAGE ro|rw [FORMAT]: sets DISK
serve() {
  local subj=$1 img=$2 mode=$3
  if [[ $subj == imgfs ]]; then
    local ro=()
    [[ $mode == ro ]] && ro=(-r)
    "$IMGFS" mount "${ro[@]}" --log "$W/imgfs.log" "$(dirname "$img")" "$MNT" || die "imgfs mount"
    DISK=$MNT/$(basename "$img")/disk.raw
  else
    : >"$W/qsd.disk"
    rm -f "$W/qsd.pid"
    "$QSD" --daemonize --pidfile "$W/qsd.pid" --blockdev "driver=file,node-name=f,filename=$img" \
      --blockdev "driver=${4:-$FORMAT},node-name=v,file=f" \
      --export "type=fuse,id=e,node-name=v,mountpoint=$W/qsd.disk,writable=$([[ $mode == rw ]] && echo on || echo off)" \
      >"$W/qsd.log" 2>&1 || die "qsd: $(cat "$W/qsd.log")"
    DISK=$W/qsd.disk
  fi
  local i
  for i in $(seq 1 500); do [[ $(stat -c %s "$DISK" 2>/dev/null) -gt 0 ]] && return 0; sleep 0.01; done
  die "$subj: $DISK never appeared"
}
unserve() {
  if [[ $1 == imgfs ]]; then "$IMGFS" umount "$MNT" || die "imgfs umount"
  else
    local p
    p=$(cat "$W/qsd.pid")
    kill "$p"
    while kill -0 "$p" 2>/dev/null; do sleep 0.01; done
  fi
}
# Before each measurement: nothing of the mounted disk in the page cache
# (tmpfs keeps the image files themselves). This VM hands free memory back
# to its host (page reporting) and pays a host fault at the next touch of
# each page, which made either server's figures swing by 2-3x with what
# ran before; touching and freeing 1.5 GiB first gives both servers memory
# as a host without that would, for the next seconds.
settle() {
  sync
  echo 3 >/proc/sys/vm/drop_caches
  head -c 1536M /dev/zero >"$W/warm"
  rm -f "$W/warm"
}
# writeseq: MiB/s of $W/write.bin (WRITE_MIB) written to $DISK with 1 MiB
# writes, fsync included.
writeseq() {
  local t0 t1
  settle
  t0=$(date +%s%N)
  dd if="$W/write.bin" of="$DISK" bs=1M conv=fsync,notrunc status=none
  t1=$(date +%s%N)
  python3 -c "print('%.1f' % ($WRITE_MIB / (($t1 - $t0) / 1e9)))"
}
# seqread: MiB/s of one sequential pass over $DISK ($SIZE bytes), 1 MiB reads.
seqread() {
  local t0 t1
  settle
  t0=$(date +%s%N)
  dd if="$DISK" of=/dev/null bs=1M status=none
  t1=$(date +%s%N)
  python3 -c "print('%.1f' % ($SIZE / 1048576 / (($t1 - $t0) / 1e9)))"
}
# randread: IOPS of 4 KiB random reads of $DISK, QD1, O_DIRECT, for
# $RAND_RUNTIME seconds.
randread() {
  settle
  fio --name=r --filename="$DISK" --rw=randread --bs=4k --direct=1 --iodepth=1 --ioengine=psync \
    --runtime="$RAND_RUNTIME" --time_based --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; t=sys.stdin.read(); print("%.0f" % json.loads(t[t.index("{"):])["jobs"][0]["read"]["iops"])'
}
