// GrainExtent: the grain directory / grain table mapping shared by the
// hosted sparse extent (read and write), COWD and seSparse (read only).
//
// Locking: `mu_` guards the grain directories, the grain-table cache, the
// cache of decoded grains, the end of the used space and the set of grains
// being allocated. Grain data is read and written outside it, so reads and
// writes of allocated grains run in parallel; an allocation reserves its
// space under `mu_`, writes the whole grain outside it, and points the
// table at it under `mu_` again. Nothing is ever freed, so a run handed
// to a reader stays valid.
//
// Crash safety (kill -9, power loss): tables are written back only at
// Flush (or when the cache is full of dirty tables), after a sync that
// makes the grains they point to durable; a new table is synced before
// the directory entries (both directories) that point to it.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <list>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "base/table_cache.h"
#include "formats/vmdk/vmdk_extent.h"
#include "imagecore/mutex.h"

namespace imgfs::vmdk {

enum class Flavor { kHosted, kCowd, kSeSparse };

struct Grain {
  enum Kind { kUnallocated, kZero, kData, kCompressed } kind = kUnallocated;
  uint64_t host = 0;  // byte offset in the file (kData, kCompressed)
};

struct Layout {
  Flavor flavor = Flavor::kHosted;
  uint32_t version = 1;
  uint64_t capacity_bytes = 0;
  uint64_t grain_bytes = 0;
  uint32_t gt_entries = 0;
  uint32_t entry_bytes = 4;
  bool zero_grain = false;  // hosted: entry 1 reads as zeros
  bool compressed = false;
  bool markers = false;
  uint64_t gd_at = 0, rgd_at = 0;  // byte offsets of the directories (rgd 0: none)
  uint64_t overhead_bytes = 0;      // the metadata before the first grain
  uint64_t desc_at = 0, desc_bytes = 0;  // an embedded descriptor (hosted)
  // Memory this extent may keep in caches (grain tables, decoded grains):
  // an image's budget split among its extents, so that a descriptor of
  // thousands of extents cannot make it hold gigabytes.
  size_t cache_bytes = 8 << 20;
  // seSparse: where the grain tables and grains lie (sectors) and how many.
  uint64_t se_gt_base = 0, se_gt_count = 0, se_grain_base = 0, se_grain_count = 0;
  std::string type, name;
};

// A small LRU of decoded grains, keyed by their offset in the file.
class DecodedGrains {
 public:
  explicit DecodedGrains(size_t capacity) : capacity_(capacity) {}
  const std::vector<uint8_t>* Find(uint64_t host);
  void Put(uint64_t host, std::vector<uint8_t> data);

 private:
  struct Entry {
    std::vector<uint8_t> data;
    std::list<uint64_t>::iterator pos;
  };
  const size_t capacity_;
  std::unordered_map<uint64_t, Entry> map_;
  std::list<uint64_t> lru_;
};

// The byte ranges of an extent's file that hold metadata (header,
// descriptor, directories, tables), merged: a grain there would overwrite
// them.
class MetaRanges {
 public:
  void Add(uint64_t at, uint64_t len);
  bool Hits(uint64_t at, uint64_t len) const;

 private:
  std::map<uint64_t, uint64_t> ends_;  // start -> end, disjoint
};

class GrainExtent final : public DiskExtent {
 public:
  GrainExtent(std::unique_ptr<io::File> file, Layout l, std::vector<uint64_t> gd, std::vector<uint64_t> rgd);
  ~GrainExtent() override;

  Status Map(uint64_t off, uint64_t len, Extent* out) override;
  Status ReadOpaque(uint64_t off, void* buf, size_t len) override;
  io::File* file() const override { return file_.get(); }
  uint64_t grain_bytes() const override { return l_.grain_bytes; }
  uint64_t directory_entries() const override {
    MutexLock l(mu_);
    return gd_.size() + rgd_.size();
  }
  std::vector<ImageInfo::Field> Info() const override;

  std::string WhyReadOnly() const override;
  std::string Damage() const override;
  void ReportDamageTo(std::shared_ptr<DamageNote> note) override;
  Status Write(uint64_t off, const void* buf, size_t len, const LayerReader* below, uint64_t base) override;
  Result<bool> BeginStream() override;
  Status WriteZeroes(uint64_t off, uint64_t len, bool unmap, const LayerReader* below, uint64_t base) override;
  Status Flush() override;
  void DropCaches() override {
    MutexLock l(mu_);
    gt_cache_.DropClean();
  }
  Status MakeEmpty() override;
  Status Grow(uint64_t new_bytes) override;
  Status Shrink(uint64_t new_bytes) override;
  void Check(uint64_t first_sector, CheckResult* r) override;
  const char* kind_name() const override { return l_.type.empty() ? "sparse" : l_.type.c_str(); }

 private:
  // The grain table covering grain `g`, or null where the directory has
  // none.
  Result<const uint8_t*> TableLocked(uint64_t g) REQUIRES(mu_);
  Result<Grain> Decode(uint64_t g, const uint8_t* table) const REQUIRES(mu_);
  Result<Grain> LookupLocked(uint64_t g) REQUIRES(mu_);
  Result<Grain> Lookup(uint64_t g);
  Status ReadCompressed(uint64_t host, uint8_t* out) const;

  // One write inside grain `g` (`in` bytes into it).
  Status WriteInGrain(uint64_t g, uint64_t in, const uint8_t* buf, size_t n, const LayerReader* below, uint64_t base);
  // Sets entry `g` in the grain table and in the redundant one, making
  // either table where the directory has none.
  Status SetEntryLocked(uint64_t g, uint32_t value) REQUIRES(mu_);
  Status SetInTableLocked(std::vector<uint64_t>& dir, uint64_t gdi, size_t i, uint32_t value) REQUIRES(mu_);
  // Waits until no allocation of grain `g` is in flight.
  void WaitForGrain(uint64_t g, UniqueMutexLock& lock) REQUIRES(mu_);
  Status FlushLocked() REQUIRES(mu_);
  // Streaming (vmdk_stream_write.cpp): grain `g` (`n` bytes, the whole
  // grain or the extent's last bytes) compressed and appended with its
  // marker; the end-of-stream marker after the last one at each flush.
  Status AppendGrain(uint64_t g, const uint8_t* buf, size_t n);
  Status StreamWrite(uint64_t off, const uint8_t* buf, size_t len);
  Status WriteEndOfStreamLocked() REQUIRES(mu_);
  // Writes a directory at the end of the file (for growth).
  Result<uint64_t> RelocateLocked(const std::vector<uint64_t>& dir) REQUIRES(mu_);
  // Clears the entries of grains [from, to) where tables exist.
  Status ClearEntriesLocked(uint64_t from, uint64_t to) REQUIRES(mu_);
  Status WriteCapacityLocked(uint64_t bytes, uint64_t gd_at, uint64_t rgd_at) REQUIRES(mu_);
  // Zeros the bytes of the grain holding `bytes` past it.
  Status ZeroTailLocked(uint64_t bytes) REQUIRES(mu_);
  // Metadata (vmdk_grain_meta.cpp): the ranges at open; the tables'
  // entries checked against them where they are few; a grain at `host`
  // that would be written checked before it is.
  void CollectMetaLocked() REQUIRES(mu_);
  void ScanTablesLocked() REQUIRES(mu_);
  Status CheckGrainLocked(uint64_t g, uint64_t host) REQUIRES(mu_);
  // Notes the damage found (the first reason stays), after which the
  // extent takes no writes. Returns Corrupt with it.
  Status DamagedLocked(const std::string& why) REQUIRES(mu_);

  std::unique_ptr<io::File> file_;
  const Layout l_;
  mutable Mutex mu_;
  std::condition_variable allocated_;  // signalled when an allocation ends
  std::vector<uint64_t> gd_ GUARDED_BY(mu_);  // byte offset of each grain table, 0 = none
  std::vector<uint64_t> rgd_ GUARDED_BY(mu_);  // the redundant directory's (empty: none)
  std::set<uint64_t> gd_dirty_ GUARDED_BY(mu_);  // directory entries not yet written
  uint64_t gd_at_ GUARDED_BY(mu_);
  uint64_t rgd_at_ GUARDED_BY(mu_);  // where the directories are (bytes; rgd 0: none)
  std::set<uint64_t> allocating_ GUARDED_BY(mu_);  // grains whose data is being written
  uint64_t next_free_ GUARDED_BY(mu_);  // where the next grain or table goes
  MetaRanges meta_ GUARDED_BY(mu_);
  // Why the extent takes no more writes: one would land on metadata.
  // Written once under mu_ before `damaged_` is set; read after it.
  std::string damage_;
  std::atomic<bool> damaged_{false};
  std::shared_ptr<DamageNote> note_ GUARDED_BY(mu_);
  // A new stream taking whole grains (BeginStream); read without mu_ by
  // WhyReadOnly, so atomic.
  std::atomic<bool> streaming_{false};
  TableCache gt_cache_ GUARDED_BY(mu_);
  DecodedGrains decoded_ GUARDED_BY(mu_);
};

}  // namespace imgfs::vmdk
