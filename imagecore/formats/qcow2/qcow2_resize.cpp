// qcow2 resize. Growing may need a larger L1 table: it is written whole at
// a new place, and one header write switches size, L1 size and L1 offset
// together. Shrinking writes the new size first, then drops what lies past
// it, so a crash in between leaves leaks, never a dangling pointer.
#include <algorithm>

#include <unordered_set>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/mutex.h"

namespace imgfs::qcow2 {

namespace {
constexpr uint64_t kSizeField = 24;  // size, crypt_method, l1_size, l1_table_offset follow
}

Status Qcow2Image::WriteSizeFieldsLocked(uint64_t size, uint32_t l1_size, uint64_t l1_offset) {
  uint8_t raw[24];
  StoreBE64(raw, size);
  StoreBE32(raw + 8, header_.crypt_method);
  StoreBE32(raw + 12, l1_size);
  StoreBE64(raw + 16, l1_offset);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(kSizeField, raw, sizeof raw));
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  header_.size = size;
  header_.l1_size = l1_size;
  header_.l1_table_offset = l1_offset;
  return Status::OK();
}

Status Qcow2Image::GrowLockedTo(uint64_t new_size) {
  const uint64_t span = l2_entries_ << cluster_bits_;
  const uint64_t need = (new_size + span - 1) / span;
  if (need * 8 > kMaxL1Bytes) return Unsupported(file_->path() + ": the new size needs too large an L1 table");
  if (need <= l1_.size()) return WriteSizeFieldsLocked(new_size, uint32_t(l1_.size()), header_.l1_table_offset);
  // Everything pending goes to the old table first; the new one is a copy.
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(false));
  const uint64_t clusters = (need * 8 + cluster_size_ - 1) >> cluster_bits_;
  IMGFS_ASSIGN_OR_RETURN(uint64_t off, AllocateClustersLocked(clusters));
  overlap_.Add(off >> cluster_bits_, clusters, kMetaL1);
  std::vector<uint8_t> raw(clusters << cluster_bits_, 0);
  for (size_t i = 0; i < l1_.size(); ++i) StoreBE64(&raw[i * 8], l1_[i]);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(off, raw.data(), raw.size()));
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(false));  // the new table's refcounts
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  const uint64_t old_off = header_.l1_table_offset, old_bytes = l1_.size() * 8;
  IMGFS_RETURN_IF_ERROR(WriteSizeFieldsLocked(new_size, uint32_t(need), off));
  if (old_bytes) pending_release_.emplace_back(old_off, old_bytes);
  l1_.resize(need, 0);
  return Status::OK();
}

Status Qcow2Image::DropL2TableLocked(size_t l1_index) {
  const uint64_t t = l1_[l1_index] & kOffsetMask;
  if (!t) return Status::OK();
  // The active L1 stops walking through this table: each cluster it names
  // and the table itself lose that walk's reference.
  if (!data_file_) {
    IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(t));
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      const uint64_t e = LoadBE64(l2 + j * entry_bytes_);
      if (e & kOflagCompressed) {
        const CompressedRange cr = DecodeCompressed(e, cluster_bits_);
        pending_release_.emplace_back(cr.host, std::min(cr.bytes, 2 * cluster_size_));
      } else if (e & kOffsetMask) {
        pending_release_.emplace_back(e & kOffsetMask, cluster_size_);
      }
    }
  }
  pending_release_.emplace_back(t, cluster_size_);
  l1_[l1_index] = 0;
  l1_dirty_ = true;
  return Status::OK();
}

Status Qcow2Image::ShrinkLockedTo(uint64_t new_size) {
  const uint64_t old_clusters = (header_.size + cluster_size_ - 1) >> cluster_bits_;
  IMGFS_RETURN_IF_ERROR(WriteSizeFieldsLocked(new_size, uint32_t(l1_.size()), header_.l1_table_offset));
  const uint64_t first_gone = (new_size + cluster_size_ - 1) >> cluster_bits_;
  const uint64_t first_table = (first_gone + l2_entries_ - 1) / l2_entries_;
  // An L2 table named twice (damage) is released once: a hostile L1 naming
  // one table 100,000 times must not queue a billion releases.
  std::unordered_set<uint64_t> dropped;
  for (size_t i = first_table; i < l1_.size(); ++i) {
    const uint64_t t = l1_[i] & kOffsetMask;
    if (t && !dropped.insert(t).second) return FoundDamage("L2 table " + std::to_string(t) + " is named twice");
    IMGFS_RETURN_IF_ERROR(DropL2TableLocked(i));
  }
  const uint64_t straddle_end = std::min(first_table * l2_entries_, old_clusters);
  for (uint64_t c = first_gone; c < straddle_end;) {
    IMGFS_ASSIGN_OR_RETURN(c, ClearClustersLocked(c, straddle_end, false));
  }
  return FlushMetadataLocked(/*apply_releases=*/true);
}

Status Qcow2Image::Resize(uint64_t new_size, const LayerReader* below) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  if (new_size % 512) return InvalidArgument(file_->path() + ": qcow2 sizes are whole 512-byte sectors");
  if (header_.version < 3 && header_.nb_snapshots)
    return Unsupported(file_->path() + ": cannot resize a v2 image which has snapshots");
  const uint64_t old = header_.size;
  if (new_size == old) return Status::OK();
  if (data_file_ && new_size < old)
    return Unsupported(file_->path() + ": cannot shrink an image with an external data file");
  bool tail_allocated = false;
  {
    MutexLock l(meta_mu_);
    IMGFS_RETURN_IF_ERROR(PrepareForWriteLocked());
    // Bitmaps follow the disk's size, as qemu resizes them: held in memory
    // and in_use on disk until they are stored at their new size at close.
    IMGFS_RETURN_IF_ERROR(TrackAllBitmapsLocked());
    IMGFS_RETURN_IF_ERROR(MarkBitmapsInUseLocked(true));
    if (new_size < old) {
      IMGFS_RETURN_IF_ERROR(BeginRefcountWindowLocked());
      IMGFS_RETURN_IF_ERROR(EndRefcountWindowLocked(ShrinkLockedTo(new_size)));
      ResizeTrackedBitmapsLocked(new_size);
      return Status::OK();
    }
    if (old & (cluster_size_ - 1)) {
      IMGFS_ASSIGN_OR_RETURN(auto slot, L2SlotLocked(old >> cluster_bits_));
      tail_allocated = HasHost(slot.first) || (slot.first & kOflagCompressed);
    }
    IMGFS_RETURN_IF_ERROR(GrowLockedTo(new_size));
    ResizeTrackedBitmapsLocked(new_size);
  }
  if (data_file_ && data_file_->Size() < new_size) IMGFS_RETURN_IF_ERROR(data_file_->Truncate(new_size));
  // What was past the old end must read as zeros: bytes a shrink left in the
  // last cluster, and a backing file larger than the old size.
  const uint64_t tail_end = std::min(new_size, (old + cluster_size_ - 1) & ~(cluster_size_ - 1));
  if (tail_allocated && tail_end > old) IMGFS_RETURN_IF_ERROR(Image::WriteZeroes(old, tail_end - old, false, below));
  if (below && below->VirtualSize() > old)
    IMGFS_RETURN_IF_ERROR(WriteZeroes(old, std::min(new_size, below->VirtualSize()) - old, true, below));
  return Flush();
}

// resize --preallocation: every cluster of [off, off+len) that holds no
// data gets one that reads as zeros, table by table as qemu-img lays them
// out: the table if it is new, then the clusters it maps in one run (at
// the end of the file unless a free run is there). What lies past
// the old end of the file is a hole (metadata), reserved (falloc) or
// written with zeros (full); a reused run is emptied first. With a data
// file the cluster is the guest offset there, as create lays it out. Data
// first, then the tables that point at it (FlushMetadataLocked's order).
Status Qcow2Image::Preallocate(uint64_t off, uint64_t len, Prealloc mode) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  if (mode == Prealloc::kOff || len == 0) return Status::OK();
  if (off > header_.size || len > header_.size - off) return NoSpace(file_->path() + ": past the end of the disk");
  // Preallocated clusters hold host zeros, which an encrypted image would
  // read as noise.
  if (encrypted()) return Unsupported(file_->path() + ": preallocation of an encrypted image is not supported yet");
  MutexLock l(meta_mu_);
  IMGFS_RETURN_IF_ERROR(PrepareForWriteLocked());
  const uint64_t first = off >> cluster_bits_, end = (off + len + cluster_size_ - 1) >> cluster_bits_;
  const uint64_t file_end = file_->Size();
  uint64_t covered = file_end;
  for (uint64_t t0 = first; t0 < end;) {
    const uint64_t t1 = std::min(end, (t0 / l2_entries_ + 1) * l2_entries_);
    std::vector<uint64_t> need, hides;  // guest clusters; with extended L2, those that read zeros over the backing file
    for (uint64_t c = t0; c < t1; ++c) {
      IMGFS_ASSIGN_OR_RETURN(auto slot, L2SlotLocked(c));
      // Zero clusters (what hides a larger backing file) stay so with
      // metadata, as qemu-img leaves them; falloc and full reserve them too.
      const bool zero = mode == Prealloc::kMetadata &&
                        (extended_l2_ ? (slot.second >> 32) != 0 : (slot.first & kOflagZero) != 0);
      if (!HasHost(slot.first) && !(slot.first & kOflagCompressed) && !zero) {
        need.push_back(c);
        if (extended_l2_ && (slot.second >> 32)) hides.push_back(c);
      }
    }
    t0 = t1;
    if (need.empty()) continue;
    // The table first (where it is new), then the run of data after it.
    IMGFS_RETURN_IF_ERROR(L2OffsetForWriteLocked(need[0]).status());
    uint64_t run = 0;
    if (data_file_) {
      for (uint64_t c : need) {
        const uint64_t at = c << cluster_bits_;
        IMGFS_RETURN_IF_ERROR(PreallocateRange(*data_file_, at, std::min(cluster_size_, header_.size - at), mode));
      }
    } else {
      const uint64_t bytes = need.size() << cluster_bits_;
      IMGFS_ASSIGN_OR_RETURN(run, AllocateClustersLocked(need.size()));
      const uint64_t reused = run < file_end ? std::min(bytes, file_end - run) : 0;
      if (reused) IMGFS_RETURN_IF_ERROR(file_->Deallocate(run, reused));  // its old bytes go
      if (reused && mode != Prealloc::kMetadata) IMGFS_RETURN_IF_ERROR(PreallocateRange(*file_, run, reused, mode));
      if (bytes > reused) IMGFS_RETURN_IF_ERROR(PreallocateRange(*file_, run + reused, bytes - reused, mode));
      covered = std::max(covered, run + bytes);
    }
    for (size_t i = 0; i < need.size(); ++i) {
      const uint64_t c = need[i];
      const uint64_t host = data_file_ ? c << cluster_bits_ : run + (uint64_t(i) << cluster_bits_);
      IMGFS_ASSIGN_OR_RETURN(uint64_t l2_off, L2OffsetForWriteLocked(c));
      IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(l2_off));
      uint8_t* e = l2 + (c % l2_entries_) * entry_bytes_;
      StoreBE64(e, host | kOflagCopied);
      // Extended: subclusters unallocated (zeros past the old end), or, where
      // they hid the backing file, allocated: the reserved cluster reads zeros.
      if (extended_l2_)
        StoreBE64(e + 8, std::binary_search(hides.begin(), hides.end(), c) ? 0xffffffffull : 0);
      l2_cache_.MarkDirty(l2_off);
    }
  }
  if (covered > file_->Size()) IMGFS_RETURN_IF_ERROR(file_->Truncate(covered));  // metadata: the hole the clusters are
  return FlushMetadataLocked(/*apply_releases=*/true);
}

}  // namespace imgfs::qcow2
