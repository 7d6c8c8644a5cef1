// qemu-img check for VHDX: every block the BAT places must start inside the
// file and overlap none of the structures (header section, log, BAT and
// metadata regions), as qemu checks them.
#include <cinttypes>
#include <cstdio>

#include "formats/vhdx/vhdx_image.h"

namespace imgfs::vhdx {
namespace {

struct Range {
  uint64_t start, end;
};

std::string Fmt(const char* fmt, uint64_t a, uint64_t b, uint64_t c = 0, uint64_t d = 0) {
  char buf[200];
  std::snprintf(buf, sizeof buf, fmt, a, b, c, d);
  return buf;
}

}  // namespace

Result<CheckResult> VhdxImage::Check(RepairMode mode, const ProgressFn& progress) {
  CheckResult r;
  r.cluster_counts = false;
  if (mode != RepairMode::kNone) {
    // The one repair: the log replayed into the file (qemu-img check -r
    // counts it as one corruption fixed, as here).
    if (!writable_) return ReadOnly(file_->path() + ": open read-write to repair");
    MutexLock l(meta_mu_);
    if (pending_) {
      IMGFS_RETURN_IF_ERROR(ReplayIntoFile());
      r.messages.push_back("Repairing the log: its entries were replayed into the file");
      ++r.corruptions_fixed;
    }
  } else if (replayed_) {
    r.messages.push_back("ERROR the log holds entries not yet applied (this check read the image as replayed)");
    ++r.corruptions;
  }
  Header h;
  {
    MutexLock l(meta_mu_);
    h = header_;
  }
  const std::vector<Range> structures = {{0, kMiB},
                                         {h.log_offset, h.log_offset + h.log_length},
                                         {bat_offset_, bat_offset_ + bat_length_},
                                         {meta_offset_, meta_offset_ + meta_length_}};
  const uint64_t file_size = view().Size();
  const uint64_t bs = params_.block_size;
  auto check_block = [&](uint64_t index, uint64_t at, uint64_t len) {
    if (at >= file_size) {
      r.messages.push_back(Fmt("ERROR VHDX BAT entry %" PRIu64 " start offset %" PRIu64
                               " points after end of file (%" PRIu64 "). Image has probably been truncated.",
                               index, at, file_size));
      ++r.corruptions;
      return;
    }
    for (const Range& s : structures) {
      if (s.start == s.end || at >= s.end || at + len <= s.start) continue;
      r.messages.push_back(Fmt("ERROR VHDX region %" PRIu64 "-%" PRIu64 " overlaps with region %" PRIu64 "-%" PRIu64,
                               at, at + len, s.start, s.end));
      ++r.corruptions;
      return;
    }
  };
  MutexLock l(bat_mu_);
  for (uint64_t b = 0; b < geometry_->payload_blocks; ++b) {
    if (progress && b % 4096 == 0) progress(b * bs, params_.disk_size);
    const uint64_t index = geometry_->PayloadEntry(b);
    IMGFS_ASSIGN_OR_RETURN(const uint64_t e, BatEntryLocked(index));
    if (EntryState(e) == kFullyPresent || EntryState(e) == kPartiallyPresent) check_block(index, EntryOffset(e), bs);
    // A differencing disk's sector bitmap, after the last block of its chunk.
    const bool chunk_end = (b + 1) % geometry_->chunk_ratio == 0 || b + 1 == geometry_->payload_blocks;
    if (params_.has_parent && chunk_end) {
      const uint64_t sb = geometry_->BitmapEntry(b);
      IMGFS_ASSIGN_OR_RETURN(const uint64_t s, BatEntryLocked(sb));
      if (EntryState(s) == kBitmapPresent) check_block(sb, EntryOffset(s), kMiB);
    }
  }
  return r;
}

}  // namespace imgfs::vhdx
