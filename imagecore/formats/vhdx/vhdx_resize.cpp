// Resizing a VHDX: the disk size item and the BAT entries change through
// the log, in one batch with the zeros that a grown disk shows past its
// old end.
#include <algorithm>
#include <vector>

#include "formats/vhdx/vhdx_image.h"

namespace imgfs::vhdx {

Status VhdxImage::Resize(uint64_t new_size, const LayerReader* below) {
  IMGFS_RETURN_IF_ERROR(EnsureStarted());
  const uint64_t old_size = params_.disk_size, bs = params_.block_size;
  if (new_size == old_size) return Status::OK();
  if (!new_size || new_size > kMaxDiskSize || new_size % params_.logical_sector)
    return InvalidArgument("a VHDX disk is a whole number of " + std::to_string(params_.logical_sector) +
                           "-byte sectors, up to 64 TiB");
  DiskParams next = params_;
  next.disk_size = new_size;
  const BatGeometry g(next);
  if (g.entries > bat_length_ / 8)
    return Unsupported(file_->path() + ": growing to " + std::to_string(new_size) +
                       " bytes needs a larger BAT region (not supported yet)");
  // A grown disk reads zeros past its old end: the last old block may
  // hold bytes there (a cut-short block, or a shrink before).
  if (new_size > old_size && old_size % bs) {
    const uint64_t to = std::min(new_size, (old_size / bs + 1) * bs);
    std::vector<uint8_t> zeros(size_t(to - old_size), 0);
    params_.disk_size = to;  // the write's bounds
    Status st = Write(old_size, zeros.data(), zeros.size(), below);
    params_.disk_size = old_size;
    IMGFS_RETURN_IF_ERROR(st);
  }
  MutexLock m(meta_mu_);
  const BatGeometry old(params_);
  // Entries of blocks past the smaller end read as nothing: a grown disk's
  // may hold anything; a shrunk disk's are given up. In batches, each
  // crash-safe: a shrink takes its size first (nothing past it is read
  // again), a grow last (nothing past the old end is read before).
  auto clear = [&]() -> Status {
    meta_mu_.AssertHeld();
    for (uint64_t b = std::min(old.payload_blocks, g.payload_blocks); b < std::max(old.payload_blocks, g.payload_blocks); ++b) {
      {
        MutexLock l(bat_mu_);
        IMGFS_ASSIGN_OR_RETURN(const uint64_t e, BatEntryLocked(g.PayloadEntry(b)));
        if (e) IMGFS_RETURN_IF_ERROR(SetEntryLocked(g.PayloadEntry(b), 0));
      }
      IMGFS_RETURN_IF_ERROR(MaybeFlushLocked());
    }
    return Status::OK();
  };
  auto set_size = [&]() -> Status {
    meta_mu_.AssertHeld();
    {
      MutexLock l(bat_mu_);
      IMGFS_RETURN_IF_ERROR(SetWordLocked(meta_offset_ + params_.disk_size_at, new_size));
    }
    return FlushLocked();
  };
  if (new_size < old_size) {
    IMGFS_RETURN_IF_ERROR(set_size());
    params_.disk_size = new_size;
    *geometry_ = g;
    IMGFS_RETURN_IF_ERROR(clear());
  } else {
    IMGFS_RETURN_IF_ERROR(clear());
    IMGFS_RETURN_IF_ERROR(set_size());
    params_.disk_size = new_size;
    *geometry_ = g;
  }
  return FlushLocked();
}

}  // namespace imgfs::vhdx
