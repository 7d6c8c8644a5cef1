// A VHDX disk (Hyper-V): payload blocks located by the BAT; a differencing
// disk's sector bitmaps say which sectors of a partly present block it
// holds, the rest coming from its parent.
//
// Log entries not yet applied are replayed before anything is read: into
// the file on a writable open, in memory only on a read-only one (the file
// is not touched), so every view is exact either way.
//
// Thread model: what Open reads is constant afterwards. `bat_mu_` guards
// the cache of BAT and sector bitmap pages.
#pragma once

#include <memory>
#include <string>

#include "base/table_cache.h"
#include "formats/vhdx/vhdx_format.h"
#include "formats/vhdx/vhdx_metadata.h"
#include "imagecore/format.h"
#include "imagecore/mutex.h"

namespace imgfs::vhdx {

class VhdxImage final : public Image {
 public:
  static Result<std::unique_ptr<Image>> Open(std::unique_ptr<io::File> file, const OpenOptions& opts);

  const FormatDriver& driver() const override;
  uint64_t VirtualSize() const override { return params_.disk_size; }
  Status BlockStatus(uint64_t off, uint64_t len, Extent* out) override;
  Status ReadOpaque(uint64_t off, void* buf, size_t len) override;
  Status Write(uint64_t off, const void* buf, size_t len, const LayerReader* below) override;
  Status Flush() override { return Status::OK(); }
  std::optional<BackingRef> Backing() const override;
  Status CheckParent(const Image& parent) const override;
  using Image::Check;
  Result<CheckResult> Check(RepairMode mode, const ProgressFn& progress) override;
  ImageInfo Info() const override;
  const io::File& file() const override { return *file_; }
  std::vector<LayerFile> files() const override { return {{file_.get(), FileRole::kImage}}; }

  const Header& header() const { return header_; }
  const DiskParams& params() const { return params_; }

 private:
  VhdxImage() = default;
  Status ReadHeaders();
  Status ReadRegions();
  // What reads the file: the file, or the file with its log replayed.
  const io::File& view() const { return replayed_ ? *replayed_ : *file_; }
  Result<uint64_t> BatEntryLocked(uint64_t index) REQUIRES(bat_mu_);
  // Whether sector `sector` of the disk is present in this file (its block
  // partly present), and how many sectors from it on share that answer
  // within its block.
  Result<std::pair<bool, uint64_t>> SectorRunLocked(uint64_t block, uint64_t sector_in_block, uint64_t max)
      REQUIRES(bat_mu_);
  Status CheckBlockAt(uint64_t block, uint64_t host) const;

  std::unique_ptr<io::File> file_;
  std::unique_ptr<io::File> replayed_;  // the log applied in memory; null when there was none
  Header header_;
  uint64_t bat_offset_ = 0;
  uint64_t bat_length_ = 0;
  uint64_t file_size_ = 0;  // at open (read-only: it does not change)
  uint64_t meta_offset_ = 0;
  uint64_t meta_length_ = 0;
  DiskParams params_;
  std::unique_ptr<BatGeometry> geometry_;
  mutable Mutex bat_mu_;
  TableCache pages_ GUARDED_BY(bat_mu_){kPageBytes, 256};  // BAT and sector bitmap pages, by file offset
  static constexpr size_t kPageBytes = 64 * 1024;
};

extern const FormatDriver kDriver;

}  // namespace imgfs::vhdx
