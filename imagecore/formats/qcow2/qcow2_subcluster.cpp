// qcow2 extended L2: writes that allocate subclusters, not whole clusters.
//
// A write that covers only part of a cluster touches just the subclusters
// it overlaps; the others keep reading from the backing file, as zeros, or
// from their own bytes. So a 4 KiB write over a backing file copies at most
// one subcluster's worth on each side instead of the whole cluster, and the
// image maps exactly as qemu's would after the same writes.
#include <algorithm>
#include <memory>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"

namespace imgfs::qcow2 {

bool Qcow2Image::SubclusterWritable(uint64_t e) const {
  if (!extended_l2_ || (e & kOflagCompressed)) return false;
  // data_file_raw promises a raw data file that reads right on its own, so
  // its clusters are filled whole.
  if (data_file_ && (header_.autoclear_features & kAutoclearDataFileRaw)) return false;
  // Owned outright, or no host cluster yet; a cluster shared with a
  // snapshot must be copied whole.
  return !HasHost(e) || (e & kOflagCopied);
}

Status Qcow2Image::SubclusterWriteLocked(uint64_t off, const uint8_t* buf, uint64_t len, const LayerReader* below) {
  const uint64_t c = off >> cluster_bits_;
  const uint64_t base = c << cluster_bits_;
  const uint32_t sc_bits = cluster_bits_ - 5;
  IMGFS_ASSIGN_OR_RETURN(uint64_t l2_off, L2OffsetForWriteLocked(c));
  uint64_t e, bitmap;
  {
    IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(l2_off));
    const uint8_t* slot = l2 + (c % l2_entries_) * entry_bytes_;
    e = LoadBE64(slot);
    bitmap = LoadBE64(slot + 8);
  }
  const uint32_t first = uint32_t((off - base) >> sc_bits);
  const uint32_t last = uint32_t((off + len - 1 - base) >> sc_bits);
  // Subclusters already allocated hold their own bytes; the partly written
  // ones that are not get the rest of their bytes copied in.
  const uint64_t start = ((bitmap >> first) & 1) ? off : base + (uint64_t(first) << sc_bits);
  const uint64_t end = ((bitmap >> last) & 1) ? off + len : base + (uint64_t(last + 1) << sc_bits);

  uint64_t host = e & kOffsetMask;
  const bool fresh = !HasHost(e);
  if (!fresh && !data_file_) {
    IMGFS_RETURN_IF_ERROR(CheckWithinFile(host, cluster_size_, "data cluster"));
    IMGFS_RETURN_IF_ERROR(CheckOverlapLocked(host, cluster_size_, 0, "guest data"));
  }
  if (fresh) {
    if (data_file_) {
      host = base;
    } else {
      IMGFS_ASSIGN_OR_RETURN(host, AllocateClustersLocked(1));
    }
  }
  const uint64_t head = off - start, tail = end - (off + len);
  std::unique_ptr<uint8_t[]> head_buf(head ? new uint8_t[head] : nullptr);
  std::unique_ptr<uint8_t[]> tail_buf(tail ? new uint8_t[tail] : nullptr);
  IMGFS_RETURN_IF_ERROR(CowSourceLocked(c, e, bitmap, start, off, head_buf.get(), below));
  IMGFS_RETURN_IF_ERROR(CowSourceLocked(c, e, bitmap, off + len, end, tail_buf.get(), below));
  const io::File::Piece pieces[3] = {{head_buf.get(), head}, {buf, len}, {tail_buf.get(), tail}};
  // Invariant: guest data is in the file before the L2 entry names it.
  IMGFS_RETURN_IF_ERROR(data().PWriteV(host + (start - base), pieces, 3));

  const uint64_t touched = ((last == 31 ? 0xffffffffull : (1ull << (last + 1)) - 1)) & ~((1ull << first) - 1);
  const uint64_t alloc = (bitmap | touched) & 0xffffffffull;
  const uint64_t zero = (bitmap >> 32) & ~alloc & 0xffffffffull;
  IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(l2_off));
  uint8_t* slot = l2 + (c % l2_entries_) * entry_bytes_;
  if (fresh) StoreBE64(slot, host | kOflagCopied);
  StoreBE64(slot + 8, (zero << 32) | alloc);
  l2_cache_.MarkDirty(l2_off);
  return Status::OK();
}

}  // namespace imgfs::qcow2
