// A VHDX disk (Hyper-V): payload blocks located by the BAT; a differencing
// disk's sector bitmaps say which sectors of a partly present block it
// holds, the rest coming from its parent.
//
// Log entries not yet applied are replayed before anything is read: into
// the file on a writable open that holds the write claim, in memory only
// otherwise (the file is not touched), so every view is exact either way.
//
// Writes: data goes straight to its block. A block is allocated at the end
// of the file, written, and only then named by the BAT. BAT and sector
// bitmap changes stay in the page cache, dirty, until Flush (or a full
// batch): the file is synced (the data before the metadata that names it),
// the changed sectors go to the log as one entry, synced, and are then
// written in place (made durable by the next sync, replayed from the log
// after a crash). The first change after an open gives the file new write
// GUIDs in both headers first, as the specification asks.
//
// Thread model: what Open reads is constant afterwards, but for the
// headers, the log writer and the file's end, guarded by `meta_mu_`, and
// the page cache, guarded by `bat_mu_`. Lock order: meta_mu_, bat_mu_.
#pragma once

#include <atomic>
#include <memory>
#include <set>
#include <string>

#include "base/table_cache.h"
#include "formats/vhdx/vhdx_format.h"
#include "formats/vhdx/vhdx_log.h"
#include "formats/vhdx/vhdx_metadata.h"
#include "imagecore/format.h"
#include "imagecore/mutex.h"

namespace imgfs::vhdx {

class VhdxImage final : public Image {
 public:
  static Result<std::unique_ptr<Image>> Open(std::unique_ptr<io::File> file, const OpenOptions& opts);
  ~VhdxImage() override;

  const FormatDriver& driver() const override;
  uint64_t VirtualSize() const override { return params_.disk_size; }
  Status BlockStatus(uint64_t off, uint64_t len, Extent* out) override;
  Status ReadOpaque(uint64_t off, void* buf, size_t len) override;
  Status Write(uint64_t off, const void* buf, size_t len, const LayerReader* below) override;
  Status WriteZeroes(uint64_t off, uint64_t len, bool unmap, const LayerReader* below) override;
  Status Flush() override;
  void DropCaches() override {
    MutexLock l(bat_mu_);
    pages_.DropClean();
  }
  Status Resize(uint64_t new_size, const LayerReader* below) override;
  Status MakeEmpty() override;
  void KeepIdentity() override;
  Status RelinkParent(const Image& parent) override;
  Status SetBacking(const std::string& name, const std::string& format, const Image* parent) override;
  Status ClaimWriting() override;
  void DropWriteClaim() override;
  std::optional<BackingRef> Backing() const override;
  Status CheckParent(const Image& parent) const override;
  using Image::Check;
  Result<CheckResult> Check(RepairMode mode, const ProgressFn& progress) override;
  ImageInfo Info() const override;
  const io::File& file() const override { return *file_; }
  std::vector<LayerFile> files() const override { return {{file_.get(), FileRole::kImage}}; }

  // The current header's data write GUID (children name it as their
  // parent_linkage).
  Guid data_write_guid() const;
  const DiskParams& params() const { return params_; }

 private:
  VhdxImage() = default;
  Status ReadHeaders() REQUIRES(meta_mu_);
  Status ReadRegions();
  // Whether the header section, log, BAT and metadata lie apart (a writer
  // relies on it).
  bool StructuresApart() const REQUIRES(meta_mu_);
  // What reads the file: the file, or the file with its log replayed in
  // memory while that has not been written into the file.
  const io::File& view() const { return replayed_ && !replay_applied_.load() ? *replayed_ : *file_; }
  // Replays the pending log into the file, then marks the log empty.
  Status ReplayIntoFile() REQUIRES(meta_mu_);
  // Both headers anew, with `h`'s fields, the non-current one first.
  Status WriteHeadersLocked(Header h) REQUIRES(meta_mu_);
  // Before the first change after an open: a new file write GUID, a log
  // GUID, and with `content` (what the disk reads changes) a new data
  // write GUID.
  Status StartChangesLocked(bool content) REQUIRES(meta_mu_);
  Status EnsureStarted(bool content = true);

  Result<uint64_t> BatEntryLocked(uint64_t index) REQUIRES(bat_mu_);
  Result<uint8_t*> PageLocked(uint64_t file_offset) REQUIRES(bat_mu_);
  // Sets the 8 bytes at `file_offset` (a BAT entry), marking its sector dirty.
  Status SetEntryLocked(uint64_t index, uint64_t value) REQUIRES(meta_mu_, bat_mu_);
  // Whether sector `sector` of block `block` is present in this file (its
  // block partly present), and how many sectors from it on share that
  // answer, up to `max`.
  Result<std::pair<bool, uint64_t>> SectorRunLocked(uint64_t block, uint64_t sector_in_block, uint64_t max)
      REQUIRES(bat_mu_);
  Status CheckBlockAt(uint64_t block, uint64_t host) const;

  // Writes within one block.
  Status WriteInBlock(uint64_t off, const uint8_t* buf, size_t len, const LayerReader* below);
  Status WriteNewBlockLocked(uint64_t block, uint64_t off, const uint8_t* buf, size_t len, const LayerReader* below)
      REQUIRES(meta_mu_);
  Status WriteSectorsLocked(uint64_t block, uint64_t host, uint64_t off, const uint8_t* buf, size_t len,
                            const LayerReader* below) REQUIRES(meta_mu_);
  Result<uint64_t> AllocateLocked(uint64_t bytes) REQUIRES(meta_mu_);
  // The sector bitmap block of `block`'s chunk, allocated if it has none.
  Result<uint64_t> BitmapBlockLocked(uint64_t block) REQUIRES(meta_mu_);
  Status SetBitsLocked(uint64_t block, uint64_t first_sector, uint64_t count) REQUIRES(meta_mu_);
  Status FlushLocked() REQUIRES(meta_mu_);
  // Sets the 8 bytes at file offset `at` (metadata), marking its sector dirty.
  Status SetWordLocked(uint64_t at, uint64_t value) REQUIRES(meta_mu_, bat_mu_);
  Status SetBytesLocked(uint64_t at, const uint8_t* data, size_t len) REQUIRES(meta_mu_, bat_mu_);
  // A new parent locator in place of the old one, through the log.
  Status WriteLocatorLocked(const ParentLocator& loc) REQUIRES(meta_mu_);
  // The header names a log GUID while entries may be written, and none
  // once everything is flushed and in place (at close, or when the claim
  // is given up): qemu then opens the image read-only too.
  Status OpenLogLocked() REQUIRES(meta_mu_);
  Status CloseLogLocked() REQUIRES(meta_mu_);
  // A batch of dirty sectors is full: flush before it grows past the log's room.
  Status MaybeFlushLocked() REQUIRES(meta_mu_);

  std::unique_ptr<io::File> file_;
  std::unique_ptr<io::File> replayed_;  // the log applied in memory; null when there was none
  std::atomic<bool> replay_applied_{false};  // ... and since written into the file
  uint64_t bat_offset_ = 0;
  uint64_t bat_length_ = 0;
  std::atomic<uint64_t> known_end_{0};  // the file's end, as far as blocks may lie (it only grows)
  uint64_t meta_offset_ = 0;
  uint64_t meta_length_ = 0;
  DiskParams params_;
  std::unique_ptr<BatGeometry> geometry_;
  bool writable_ = false;

  mutable Mutex meta_mu_;
  Header header_ GUARDED_BY(meta_mu_);
  int current_slot_ GUARDED_BY(meta_mu_) = 0;
  bool started_ GUARDED_BY(meta_mu_) = false;  // write GUIDs renewed since the open
  bool log_open_ GUARDED_BY(meta_mu_) = false;  // the header names the writer's log GUID
  bool keep_identity_ GUARDED_BY(meta_mu_) = false;  // changes keep the data write GUID (a commit's base)
  std::atomic<bool> started_fast_{false};      // the same, read without the lock
  std::unique_ptr<LogWriter> log_ GUARDED_BY(meta_mu_);
  std::optional<Replay> pending_ GUARDED_BY(meta_mu_);  // the log not yet replayed into the file
  uint64_t end_ GUARDED_BY(meta_mu_) = 0;  // where the next block goes
  std::set<uint64_t> dirty_ GUARDED_BY(meta_mu_);  // 4 KiB sectors changed in the cache, not yet logged
  bool failed_ GUARDED_BY(meta_mu_) = false;  // a flush failed half way: no more changes

  mutable Mutex bat_mu_;
  static constexpr size_t kPageBytes = 64 * 1024;
  TableCache pages_ GUARDED_BY(bat_mu_){kPageBytes, 256};  // BAT and sector bitmap pages, by file offset
  uint8_t* last_page_ GUARDED_BY(bat_mu_) = nullptr;  // the page PageLocked returned last
  uint64_t last_page_offset_ GUARDED_BY(bat_mu_) = 0;
};

extern const FormatDriver kDriver;

}  // namespace imgfs::vhdx
