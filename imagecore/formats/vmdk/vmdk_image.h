// A VMDK disk: a descriptor (a text file, or embedded in a monolithic
// sparse file) and the extents it lists, laid end to end.
//
// Thread model: the extent list is set at open and changes only in Resize,
// which runs alone (the chain's rule for control operations); the extents
// guard their own state. `cid_mu_` guards the descriptor's CID, changed
// once, at the first write after an open, before any data is written (as
// VMware does, so a child made on this disk sees that it changed).
#pragma once

#include <atomic>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "formats/vmdk/vmdk_descriptor.h"
#include "formats/vmdk/vmdk_extent.h"
#include "imagecore/format.h"
#include "imagecore/mutex.h"

namespace imgfs::vmdk {

class VmdkImage final : public Image {
 public:
  static Result<std::unique_ptr<Image>> Open(std::unique_ptr<io::File> file, const OpenOptions& opts);

  const FormatDriver& driver() const override;
  uint64_t VirtualSize() const override { return size_; }
  Status BlockStatus(uint64_t off, uint64_t len, Extent* out) override;
  Status ReadOpaque(uint64_t off, void* buf, size_t len) override;
  Status Write(uint64_t off, const void* buf, size_t len, const LayerReader* below) override;
  Status WriteZeroes(uint64_t off, uint64_t len, bool unmap, const LayerReader* below) override;
  Status Flush() override;
  void DropCaches() override {
    for (const auto& e : extents_) e->DropCaches();
  }
  std::string DamageFound() const override { return damage_->Get(); }
  // convert -c: grains are compressed only in a stream (BeginStreamWrite),
  // by the extent; elsewhere they are written as they are, as qemu-img does.
  Result<size_t> Compress(const uint8_t*, size_t, uint8_t*, size_t) const override { return size_t{0}; }
  Result<bool> WriteCompressed(uint64_t, const uint8_t*, size_t) override { return false; }
  Result<bool> BeginStreamWrite() override;
  std::optional<BackingRef> Backing() const override;
  Status CheckParent(const Image& parent) const override;
  Status RelinkParent(const Image& parent) override;
  Status SetBacking(const std::string& name, const std::string& format, const Image* parent) override;
  using Image::Amend;
  Status Amend(const std::map<std::string, std::string>& options, const ProgressFn& progress) override;
  Status MakeEmpty() override;
  Status Resize(uint64_t new_size, const LayerReader* below) override;
  using Image::Check;
  Result<CheckResult> Check(RepairMode mode, const ProgressFn& progress) override;
  ImageInfo Info() const override;
  const io::File& file() const override { return *main_; }
  std::vector<LayerFile> files() const override { return files_; }

  ~VmdkImage() override;
  // The descriptor's CID now (it changes at the first write).
  uint32_t cid() const;
  void KeepIdentity() override { cid_changed_.store(true, std::memory_order_release); }

 private:
  VmdkImage() = default;
  // Gives the disk a new CID in its descriptor, durably, once per open.
  Status ChangeCidOnce();
  Status WriteDescriptor(const std::string& text) REQUIRES(cid_mu_);
  // The extents of a monolithic sparse file (the file is its own extent).
  Status OpenMonolithic(std::unique_ptr<io::File> file);
  // The extents a text descriptor lists, each opened by name.
  Status OpenDescribed(std::unique_ptr<io::File> file, const OpenOptions& opts);
  Status AddExtent(const ExtentLine& line, const OpenOptions& opts);
  // Resize's steps: the last extent grows; then (twoGbMaxExtent*) new
  // extent files follow it, each whole and synced before the descriptor
  // names it.
  Status GrowLast(uint64_t new_size);
  Status AddExtentFile(uint64_t sectors);
  Status ShrinkTo(uint64_t new_size);
  void Append(std::unique_ptr<DiskExtent> e);
  size_t CacheBytesPerExtent() const;
  size_t ExtentAt(uint64_t off) const;

  std::unique_ptr<io::File> descriptor_file_;  // null when the descriptor is embedded
  io::File* main_ = nullptr;                   // the file opened
  Descriptor desc_;
  std::vector<std::unique_ptr<DiskExtent>> extents_;
  std::vector<uint64_t> starts_;  // guest byte offset of each extent
  uint64_t size_ = 0;
  uint64_t dir_entries_ = 0;  // of all extents, at open (bounded)
  std::vector<LayerFile> files_;
  std::string desc_text_ GUARDED_BY(cid_mu_);  // as read, then as written
  uint64_t desc_at_ = 0;           // where it lies in main_ (bytes)
  uint64_t desc_room_ = 0;         // the room it has there (0: the whole file)
  mutable Mutex cid_mu_;  // guards desc_.cid, desc_text_
  std::atomic<bool> cid_changed_{false};
  std::shared_ptr<DamageNote> damage_ = std::make_shared<DamageNote>();  // shared with the extents
  bool opened_ = false;  // Open finished: only then does closing flush
  // For new extent files (resize): where files come from and with whose rights.
  const FileOpener* opener_ = nullptr;
  io::Access access_;
};

extern const FormatDriver kDriver;

// The descriptor text with its `key` line set to `value` (vmdk_image.cpp).
std::string WithKey(const std::string& text, const std::string& key, const std::string& value);

}  // namespace imgfs::vmdk
