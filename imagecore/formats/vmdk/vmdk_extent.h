// One extent of a VMDK disk: a run of guest sectors stored one way (a flat
// file, a sparse extent with grain tables, or nothing at all for ZERO).
// Offsets passed to an extent are bytes from the extent's own start.
//
// Thread model: Map and ReadOpaque may run on many threads at once; each
// extent documents its lock.
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "imagecore/file.h"
#include "imagecore/image.h"
#include "imagecore/mutex.h"

namespace imgfs::vmdk {

// The first damage an image's extents found while serving it, read from
// any thread (Image::DamageFound).
class DamageNote {
 public:
  void Note(const std::string& why) {
    MutexLock l(mu_);
    if (why_.empty()) why_ = why;
  }
  std::string Get() const {
    MutexLock l(mu_);
    return why_;
  }

 private:
  mutable Mutex mu_;
  std::string why_ GUARDED_BY(mu_);
};

class DiskExtent {
 public:
  virtual ~DiskExtent() = default;
  // Guest bytes the extent covers.
  uint64_t bytes() const { return bytes_; }
  // The longest run at `off` (< bytes()) of at most `len` bytes of one kind.
  virtual Status Map(uint64_t off, uint64_t len, Extent* out) = 0;
  // Reads a run that Map called kOpaque (or any other).
  virtual Status ReadOpaque(uint64_t off, void* buf, size_t len) = 0;
  // The file holding it (null for ZERO).
  virtual io::File* file() const = 0;
  // What `qemu-img info` lists for it under "extents".
  virtual std::vector<ImageInfo::Field> Info() const = 0;
  // Bytes per grain (0: not a sparse extent).
  virtual uint64_t grain_bytes() const { return 0; }
  // Entries of the grain directories it holds in memory (0: none).
  virtual uint64_t directory_entries() const { return 0; }

  // Why the extent takes no writes ("" = it does, if its file is writable).
  virtual std::string WhyReadOnly() const { return ""; }
  // Damage found while serving it (a write that would land on metadata):
  // "" if none. It is also noted in `note`, once one is given.
  virtual std::string Damage() const { return ""; }
  virtual void ReportDamageTo(std::shared_ptr<DamageNote> note) {}
  // Writes guest bytes. `below` reads the disk under this layer at guest
  // offsets; `base` is the extent's first guest byte (for copy-on-write).
  virtual Status Write(uint64_t off, const void* buf, size_t len, const LayerReader* below, uint64_t base) = 0;
  // Makes [off, off+len) read as zeros; with `unmap` frees host space
  // where the extent can.
  virtual Status WriteZeroes(uint64_t off, uint64_t len, bool unmap, const LayerReader* below, uint64_t base) = 0;
  // See Image::BeginStreamWrite: true where the extent is a new, empty
  // stream of compressed grains and now takes whole grains once each.
  virtual Result<bool> BeginStream() { return false; }
  // Makes every completed write durable, in crash-safe order.
  virtual Status Flush() { return Status::OK(); }
  // Image::DropCaches for this extent.
  virtual void DropCaches() {}
  // Drops every allocation, so the extent reads from below again.
  virtual Status MakeEmpty() { return Unsupported("a " + std::string(kind_name()) + " extent cannot be emptied"); }
  virtual const char* kind_name() const = 0;
  // Adds what a check finds in this extent to `r` (its first guest sector
  // is `first_sector`, for the messages).
  virtual void Check(uint64_t first_sector, CheckResult* r) {}
  // Covers `new_bytes` (more than now); what it gains reads as unallocated
  // (sparse) or zeros (flat). Exclusive: no I/O meanwhile.
  virtual Status Grow(uint64_t new_bytes) {
    return Unsupported("a " + std::string(kind_name()) + " extent cannot grow");
  }
  // Covers only `new_bytes` (0 < new_bytes < bytes()); what lay past it is
  // gone, and does not come back with a later Grow. Exclusive.
  virtual Status Shrink(uint64_t new_bytes) {
    return Unsupported("a " + std::string(kind_name()) + " extent cannot shrink");
  }

 protected:
  explicit DiskExtent(uint64_t bytes) : bytes_(bytes) {}
  uint64_t bytes_;
};

// FLAT and VMFS: the guest bytes lie verbatim in `file` from `start`
// (bytes). Holes in the host file are holes in the disk.
std::unique_ptr<DiskExtent> NewFlatExtent(std::unique_ptr<io::File> file, uint64_t start, uint64_t bytes,
                                          const std::string& type, const std::string& name);
// ZERO: reads as zeros, stores nothing.
std::unique_ptr<DiskExtent> NewZeroExtent(uint64_t bytes);

// Helpers for Info().
ImageInfo::Field InfoString(const char* key, const char* human, const std::string& v);
ImageInfo::Field InfoUint(const char* key, const char* human, uint64_t v);
ImageInfo::Field InfoBool(const char* key, const char* human, bool v);

}  // namespace imgfs::vmdk
