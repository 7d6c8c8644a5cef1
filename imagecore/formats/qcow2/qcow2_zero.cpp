// qcow2 zeroing and discarding: whole clusters become zero clusters (or
// unallocated), their host clusters are released once the new entries are
// durable; partial clusters are written with zeros.
#include <algorithm>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/mutex.h"

namespace imgfs::qcow2 {

Result<uint64_t> Qcow2Image::ClearClustersLocked(uint64_t c, uint64_t end, bool zero) {
  const uint64_t l1_index = c / l2_entries_;
  const uint64_t stop = std::min(end, (l1_index + 1) * l2_entries_);
  if (l1_index >= l1_.size()) return end;  // past the L1 table nothing is mapped
  if (!(l1_[l1_index] & kOffsetMask) && !zero) return stop;  // already unallocated
  IMGFS_ASSIGN_OR_RETURN(uint64_t l2_off, L2OffsetForWriteLocked(c));
  IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(l2_off));
  bool changed = false;
  for (; c < stop; ++c) {
    uint8_t* slot = l2 + (c % l2_entries_) * entry_bytes_;
    const uint64_t e = LoadBE64(slot), bitmap = extended_l2_ ? LoadBE64(slot + 8) : 0;
    uint64_t ne = 0, nbitmap = 0;
    if (zero) {
      if (extended_l2_)
        nbitmap = 0xffffffffull << 32;  // every subcluster reads as zeros
      else
        ne = kOflagZero;
    }
    if (ne == e && nbitmap == bitmap) continue;
    StoreBE64(slot, ne);
    if (extended_l2_) StoreBE64(slot + 8, nbitmap);
    changed = true;
    if (data_file_) continue;  // its clusters are not refcounted
    // The refcount drops after the new entry is durable (a pending release).
    if (e & kOflagCompressed) {
      const CompressedRange cr = DecodeCompressed(e, cluster_bits_);
      pending_release_.emplace_back(cr.host, std::min(cr.bytes, 2 * cluster_size_));
    } else if (e & kOffsetMask) {
      pending_release_.emplace_back(e & kOffsetMask, cluster_size_);
    }
  }
  if (changed) l2_cache_.MarkDirty(l2_off);
  return stop;
}

Status Qcow2Image::WriteZeroes(uint64_t off, uint64_t len, bool unmap, const LayerReader* below) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  if (off > header_.size || len > header_.size - off)
    return NoSpace(file_->path() + ": write past the end of the disk");
  // Zero clusters need version 3 where a backing file would show through;
  // an external data file keeps its bytes itself: write zeros there.
  if (data_file_ || (header_.version < 3 && below)) return Image::WriteZeroes(off, len, unmap, below);
  const uint64_t c_begin = (off + cluster_size_ - 1) >> cluster_bits_;
  const uint64_t c_end = (off + len) >> cluster_bits_;
  if (c_begin >= c_end) return Image::WriteZeroes(off, len, unmap, below);
  IMGFS_RETURN_IF_ERROR(Image::WriteZeroes(off, (c_begin << cluster_bits_) - off, unmap, below));
  IMGFS_RETURN_IF_ERROR(
      Image::WriteZeroes(c_end << cluster_bits_, off + len - (c_end << cluster_bits_), unmap, below));
  // Without a backing file an unallocated cluster reads as zeros already.
  const bool zero_flag = below != nullptr;
  for (uint64_t c = c_begin; c < c_end;) {
    MutexLock l(meta_mu_);  // one L2 table at a time: I/O goes on between
    IMGFS_RETURN_IF_ERROR(PrepareForWriteLocked());
    if (c == c_begin) MarkDirtyLocked(c_begin << cluster_bits_, (c_end - c_begin) << cluster_bits_);
    IMGFS_ASSIGN_OR_RETURN(c, ClearClustersLocked(c, c_end, zero_flag));
  }
  if (!unmap) return Status::OK();
  // A discard (a guest's fstrim) shrinks the host file now, as on a Linux
  // filesystem: the new entries become durable, then the clusters are freed
  // and punched. Without unmap the space waits for the next flush.
  MutexLock l(meta_mu_);
  if (pending_release_.empty()) return Status::OK();
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(/*apply_releases=*/true));
  ReleaseQuarantineLocked();
  return Status::OK();
}

Status Qcow2Image::MakeEmpty() {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  const uint64_t n = (header_.size + cluster_size_ - 1) >> cluster_bits_;
  MutexLock l(meta_mu_);
  IMGFS_RETURN_IF_ERROR(PrepareForWriteLocked());
  MarkDirtyLocked(0, header_.size);  // what the image alone holds is gone
  for (uint64_t c = 0; c < n;) {
    IMGFS_ASSIGN_OR_RETURN(c, ClearClustersLocked(c, n, false));
  }
  return FlushMetadataLocked(/*apply_releases=*/true);
}

}  // namespace imgfs::qcow2
