// GrainExtent: writing a hosted sparse extent (see vmdk_grains.h for the
// locking and the order of writes).
#include <algorithm>
#include <cstring>

#include "base/endian.h"
#include "formats/vmdk/vmdk_grains.h"
#include "imagecore/log.h"
#include "imagecore/mutex.h"

namespace imgfs::vmdk {

GrainExtent::~GrainExtent() {
  if (!file_->writable() || !WhyReadOnly().empty()) return;
  MutexLock lock(mu_);
  Status st = FlushLocked();
  if (!st.ok()) Log(LogLevel::kError, file_->path() + ": flush at close failed: " + st.ToString());
}

std::string GrainExtent::WhyReadOnly() const {
  switch (l_.flavor) {
    case Flavor::kCowd: return "vmfsSparse (COWD) extents are served read-only";
    case Flavor::kSeSparse: return "seSparse extents are served read-only";
    case Flavor::kHosted: break;
  }
  if (l_.compressed && !streaming_.load()) return "streamOptimized (compressed) extents are served read-only";
  if (l_.version >= 3 && !streaming_.load()) return "a version 3 sparse extent (changed block tracking) is served read-only";
  return Damage();
}

std::string GrainExtent::Damage() const { return damaged_.load() ? damage_ : ""; }

void GrainExtent::WaitForGrain(uint64_t g, UniqueMutexLock& lock) {
  allocated_.wait(lock.native(), [&] {
    mu_.AssertHeld();  // wait() holds it when it asks
    return !allocating_.count(g);
  });
}

Status GrainExtent::SetInTableLocked(std::vector<uint64_t>& dir, uint64_t gdi, size_t i, uint32_t value) {
  const size_t bytes = gt_cache_.table_bytes();
  auto flush = [this] {
        mu_.AssertHeld();  // a cache callback, under it
        return FlushLocked();
      };
  uint8_t* t = nullptr;
  if (!dir[gdi]) {
    // A new table at the end of the file; its directory entry is written
    // at the next flush, after the table itself is durable.
    const uint64_t at = next_free_;
    if ((at + bytes) / 512 > UINT32_MAX) return NoSpace(file_->path() + ": the extent is full (2 TiB of sectors)");
    next_free_ += (bytes + 511) / 512 * 512;
    IMGFS_ASSIGN_OR_RETURN(t, gt_cache_.Create(at, flush));
    meta_.Add(at, bytes);
    dir[gdi] = at;
    gd_dirty_.insert(gdi);
  } else {
    auto load = [this, bytes](uint64_t o, uint8_t* buf) { return file_->PRead(o, buf, bytes); };
    IMGFS_ASSIGN_OR_RETURN(t, gt_cache_.Get(dir[gdi], load, flush));
  }
  StoreLE32(t + i * 4, value);
  gt_cache_.MarkDirty(dir[gdi]);
  return Status::OK();
}

Status GrainExtent::SetEntryLocked(uint64_t g, uint32_t value) {
  const uint64_t gdi = g / l_.gt_entries;
  const size_t i = g % l_.gt_entries;
  if (gdi >= gd_.size()) return Corrupt(file_->path() + ": grain " + std::to_string(g) + " outside the grain directory");
  IMGFS_RETURN_IF_ERROR(SetInTableLocked(gd_, gdi, i, value));
  if (!rgd_.empty()) IMGFS_RETURN_IF_ERROR(SetInTableLocked(rgd_, gdi, i, value));
  return Status::OK();
}

Status GrainExtent::WriteInGrain(uint64_t g, uint64_t in, const uint8_t* buf, size_t n, const LayerReader* below,
                                 uint64_t base) {
  const uint64_t gb = l_.grain_bytes;
  UniqueMutexLock lock(mu_);
  WaitForGrain(g, lock);
  IMGFS_ASSIGN_OR_RETURN(Grain gr, LookupLocked(g));
  if (gr.kind == Grain::kData) {
    IMGFS_RETURN_IF_ERROR(CheckGrainLocked(g, gr.host));
    lock.unlock();
    return file_->PWrite(gr.host + in, buf, n);
  }
  // Allocate: the space now, the data outside the lock, the pointer last.
  allocating_.insert(g);
  const uint64_t host = next_free_;
  next_free_ += gb;
  lock.unlock();
  std::vector<uint8_t> whole;
  const uint8_t* src = buf;
  Status st;
  if (n != gb) {
    whole.assign(gb, 0);
    // What the grain showed before: the layers below, or zeros for a
    // zeroed grain (it hides them).
    if (gr.kind == Grain::kUnallocated && below) st = below->Read(base + g * gb, whole.data(), gb);
    std::memcpy(whole.data() + in, buf, n);
    src = whole.data();
  }
  if (st.ok()) st = file_->PWrite(host, src, gb);
  lock.lock();
  if (st.ok() && host / 512 > UINT32_MAX) st = NoSpace(file_->path() + ": the extent is full (2 TiB of sectors)");
  if (st.ok()) st = SetEntryLocked(g, uint32_t(host / 512));
  allocating_.erase(g);
  allocated_.notify_all();
  return st;  // a failed allocation leaves its space unused: a leak, never a wrong pointer
}

Status GrainExtent::Write(uint64_t off, const void* buf, size_t len, const LayerReader* below, uint64_t base) {
  const std::string why = WhyReadOnly();
  if (!why.empty()) return ReadOnly(file_->path() + ": " + why);
  const auto* p = static_cast<const uint8_t*>(buf);
  if (streaming_.load()) return StreamWrite(off, p, len);
  const uint64_t gb = l_.grain_bytes;
  while (len > 0) {
    const uint64_t g = off / gb, in = off % gb;
    const size_t n = std::min<uint64_t>(len, gb - in);
    IMGFS_RETURN_IF_ERROR(WriteInGrain(g, in, p, n, below, base));
    p += n;
    off += n;
    len -= n;
  }
  return Status::OK();
}

Status GrainExtent::WriteZeroes(uint64_t off, uint64_t len, bool unmap, const LayerReader* below, uint64_t base) {
  const std::string why = WhyReadOnly();
  if (!why.empty()) return ReadOnly(file_->path() + ": " + why);
  if (streaming_.load()) {  // a new stream reads as zeros where no grain is: nothing to write
    if (below) return Unsupported(file_->path() + ": a streamOptimized extent over a backing file cannot take zeros");
    for (uint64_t g = off / l_.grain_bytes; g * l_.grain_bytes < off + len; ++g) {
      IMGFS_ASSIGN_OR_RETURN(Grain gr, Lookup(g));
      if (gr.kind != Grain::kUnallocated) return Unsupported(file_->path() + ": a streamOptimized grain cannot be written twice");
    }
    return Status::OK();
  }
  const uint64_t gb = l_.grain_bytes;
  std::vector<uint8_t> zeros;
  while (len > 0) {
    const uint64_t g = off / gb, in = off % gb;
    const uint64_t n = std::min<uint64_t>(len, gb - in);
    bool done = false;
    if (n == gb) {
      UniqueMutexLock lock(mu_);
      WaitForGrain(g, lock);
      IMGFS_ASSIGN_OR_RETURN(Grain gr, LookupLocked(g));
      if (gr.kind == Grain::kData) IMGFS_RETURN_IF_ERROR(CheckGrainLocked(g, gr.host));
      if (l_.zero_grain) {
        // A zeroed-grain entry hides the layers below and needs no data;
        // the grain it replaces is left unused (punched, with unmap).
        IMGFS_RETURN_IF_ERROR(SetEntryLocked(g, 1));
        lock.unlock();
        if (unmap && gr.kind == Grain::kData) (void)file_->Deallocate(gr.host, gb);
        done = true;
      } else if (gr.kind == Grain::kUnallocated && !below) {
        done = true;  // reads as zeros already
      } else if (gr.kind == Grain::kData && unmap) {
        lock.unlock();
        IMGFS_RETURN_IF_ERROR(file_->Deallocate(gr.host, gb));  // reads as zeros, frees the space
        done = true;
      }
    }
    if (!done) {
      zeros.assign(n, 0);
      IMGFS_RETURN_IF_ERROR(WriteInGrain(g, in, zeros.data(), n, below, base));
    }
    off += n;
    len -= n;
  }
  return Status::OK();
}

Status GrainExtent::FlushLocked() {
  if (!file_->writable()) return Status::OK();
  if (streaming_.load()) IMGFS_RETURN_IF_ERROR(WriteEndOfStreamLocked());
  if (!gt_cache_.HasDirty() && gd_dirty_.empty()) return file_->Sync();
  IMGFS_RETURN_IF_ERROR(file_->Sync());  // the grains, before the tables that point at them
  IMGFS_RETURN_IF_ERROR(gt_cache_.WriteBack(
      [this](uint64_t at, const uint8_t* t) {
        mu_.AssertHeld();
        return file_->PWrite(at, t, gt_cache_.table_bytes());
      }));
  if (gd_dirty_.empty()) return file_->Sync();
  IMGFS_RETURN_IF_ERROR(file_->Sync());  // new tables, before the directory entries that point at them
  for (uint64_t gdi : gd_dirty_) {
    uint8_t e[4];
    StoreLE32(e, uint32_t(gd_[gdi] / 512));
    IMGFS_RETURN_IF_ERROR(file_->PWrite(gd_at_ + gdi * 4, e, 4));
    if (!rgd_.empty()) {
      StoreLE32(e, uint32_t(rgd_[gdi] / 512));
      IMGFS_RETURN_IF_ERROR(file_->PWrite(rgd_at_ + gdi * 4, e, 4));
    }
  }
  gd_dirty_.clear();
  return file_->Sync();
}

Status GrainExtent::MakeEmpty() {
  const std::string why = WhyReadOnly();
  if (!why.empty()) return ReadOnly(file_->path() + ": " + why);
  UniqueMutexLock lock(mu_);
  allocated_.wait(lock.native(), [&] {
    mu_.AssertHeld();
    return allocating_.empty();
  });
  // Every table zeroed (written back after the usual sync), then, where
  // every table lies in the metadata before the first grain (as qemu-img
  // lays it out), the grains cut off.
  uint64_t tables_end = 0;
  const size_t bytes = gt_cache_.table_bytes();
  for (std::vector<uint64_t>* dir : {&gd_, &rgd_})
    for (uint64_t at : *dir) {
      if (!at) continue;
      IMGFS_RETURN_IF_ERROR(gt_cache_.Create(at, [this] {
        mu_.AssertHeld();  // a cache callback, under it
        return FlushLocked();
      }).status());
      tables_end = std::max(tables_end, at + bytes);
    }
  IMGFS_RETURN_IF_ERROR(FlushLocked());
  if (l_.overhead_bytes && tables_end <= l_.overhead_bytes && gd_at_ < l_.overhead_bytes &&
      rgd_at_ < l_.overhead_bytes &&
      next_free_ > l_.overhead_bytes) {
    IMGFS_RETURN_IF_ERROR(file_->Truncate(l_.overhead_bytes));
    IMGFS_RETURN_IF_ERROR(file_->Sync());
    next_free_ = l_.overhead_bytes;
  }
  return Status::OK();
}

Result<uint64_t> GrainExtent::RelocateLocked(const std::vector<uint64_t>& dir) {
  const uint64_t at = next_free_;
  std::vector<uint8_t> raw((dir.size() * 4 + 511) / 512 * 512, 0);
  if ((at + raw.size()) / 512 > UINT32_MAX) return NoSpace(file_->path() + ": the extent is full (2 TiB of sectors)");
  for (size_t i = 0; i < dir.size(); ++i) StoreLE32(&raw[i * 4], uint32_t(dir[i] / 512));
  IMGFS_RETURN_IF_ERROR(file_->PWrite(at, raw.data(), raw.size()));
  meta_.Add(at, raw.size());
  next_free_ += raw.size();
  return at;
}

Status GrainExtent::Grow(uint64_t new_bytes) {
  const std::string why = WhyReadOnly();
  if (!why.empty()) return ReadOnly(file_->path() + ": " + why);
  if (new_bytes <= bytes_) return Status::OK();
  UniqueMutexLock lock(mu_);
  IMGFS_RETURN_IF_ERROR(FlushLocked());  // pending tables go where the directories are now
  // Grains past the old end that a shrink cut off (a crash may have
  // stopped it between its header write and clearing them) stay gone.
  const uint64_t gb = l_.grain_bytes;
  IMGFS_RETURN_IF_ERROR(ClearEntriesLocked((bytes_ + gb - 1) / gb, gd_.size() * uint64_t(l_.gt_entries)));
  IMGFS_RETURN_IF_ERROR(FlushLocked());
  // So does what the last grain holds past the old end (a file that was
  // never cut there, or was made with a smaller size field).
  IMGFS_RETURN_IF_ERROR(ZeroTailLocked(bytes_));
  const uint64_t span = uint64_t(l_.gt_entries) * l_.grain_bytes;
  const uint64_t n = (new_bytes + span - 1) / span;
  if (n > (uint64_t(1) << 25)) return InvalidArgument(file_->path() + ": too large for one sparse extent");
  // A directory fills whole sectors (every structure starts on one), so
  // it may grow into the rest of its last sector; beyond that it moves to
  // the end of the file. Either way it is durable before the one header
  // write that makes the disk larger.
  auto room = [](size_t entries) { return (entries * 4 + 511) / 512 * 512 / 4; };
  const bool in_place = n <= room(gd_.size()) && (rgd_.empty() || n <= room(rgd_.size()));
  const size_t old_n = gd_.size();
  std::vector<uint64_t> gd = gd_, rgd = rgd_;
  gd.resize(n, 0);
  if (!rgd.empty()) rgd.resize(n, 0);
  // Zeroed grain tables for the new range, as qemu-img preallocates them
  // (qemu writes only through tables that exist), durable before any
  // directory entry points to them.
  const uint64_t table = (uint64_t(l_.gt_entries) * 4 + 511) / 512 * 512;
  if (n > old_n) {
    const uint64_t total = (n - old_n) * table;
    if ((next_free_ + 2 * total) / 512 > UINT32_MAX) return NoSpace(file_->path() + ": the extent is full (2 TiB of sectors)");
    // Past the end of the file: growing it makes them, zeroed.
    for (std::vector<uint64_t>* dir : {&gd, &rgd}) {
      if (dir->empty()) continue;
      for (size_t i = old_n; i < n; ++i) (*dir)[i] = next_free_ + (i - old_n) * table;
      meta_.Add(next_free_, total);
      next_free_ += total;
    }
    if (file_->Size() < next_free_) IMGFS_RETURN_IF_ERROR(file_->Truncate(next_free_));
    IMGFS_RETURN_IF_ERROR(file_->Sync());
  }
  uint64_t gd_at = gd_at_, rgd_at = rgd_at_;
  if (in_place) {
    // The rest of the directories' last sectors: free, as every structure starts on a sector.
    for (size_t i = old_n; i < n; ++i) {
      uint8_t e[4];
      StoreLE32(e, uint32_t(gd[i] / 512));
      IMGFS_RETURN_IF_ERROR(file_->PWrite(gd_at + i * 4, e, 4));
      if (!rgd.empty()) {
        StoreLE32(e, uint32_t(rgd[i] / 512));
        IMGFS_RETURN_IF_ERROR(file_->PWrite(rgd_at + i * 4, e, 4));
      }
    }
  } else {
    IMGFS_ASSIGN_OR_RETURN(gd_at, RelocateLocked(gd));
    if (!rgd.empty()) {
      IMGFS_ASSIGN_OR_RETURN(rgd_at, RelocateLocked(rgd));
    }
  }
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  IMGFS_RETURN_IF_ERROR(WriteCapacityLocked(new_bytes, gd_at, rgd.empty() ? 0 : rgd_at));
  gd_ = std::move(gd);
  rgd_ = std::move(rgd);
  gd_at_ = gd_at;
  rgd_at_ = rgd_at;
  bytes_ = new_bytes;
  return Status::OK();
}

Status GrainExtent::ClearEntriesLocked(uint64_t from, uint64_t to) {
  const size_t bytes = gt_cache_.table_bytes();
  auto load = [this, bytes](uint64_t o, uint8_t* buf) { return file_->PRead(o, buf, bytes); };
  for (uint64_t g = from; g < to; ++g) {
    const uint64_t gdi = g / l_.gt_entries;
    for (std::vector<uint64_t>* dir : {&gd_, &rgd_}) {
      if (gdi >= dir->size() || !(*dir)[gdi]) continue;
      IMGFS_ASSIGN_OR_RETURN(uint8_t * t, gt_cache_.Get((*dir)[gdi], load, [this] {
        mu_.AssertHeld();  // a cache callback, under it
        return FlushLocked();
      }));
      uint8_t* e = t + (g % l_.gt_entries) * 4;
      if (LoadLE32(e) == 0) continue;
      StoreLE32(e, 0);
      gt_cache_.MarkDirty((*dir)[gdi]);
    }
  }
  return Status::OK();
}

Status GrainExtent::WriteCapacityLocked(uint64_t bytes, uint64_t gd_at, uint64_t rgd_at) {
  uint8_t h[512];
  IMGFS_RETURN_IF_ERROR(file_->PRead(0, h, sizeof h));
  StoreLE64(h + 12, bytes / 512);
  StoreLE64(h + 56, gd_at / 512);
  if (rgd_at) StoreLE64(h + 48, rgd_at / 512);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(0, h, sizeof h));  // one sector: the switch
  return file_->Sync();
}

Status GrainExtent::Shrink(uint64_t new_bytes) {
  const std::string why = WhyReadOnly();
  if (!why.empty()) return ReadOnly(file_->path() + ": " + why);
  UniqueMutexLock lock(mu_);
  allocated_.wait(lock.native(), [&] {
    mu_.AssertHeld();
    return allocating_.empty();
  });
  IMGFS_RETURN_IF_ERROR(FlushLocked());
  // The smaller size first; then the grains past it are cleared, so that
  // a later growth shows zeros there (Grow clears them too, for a crash in
  // between). The space they hold is not reclaimed.
  const uint64_t gb = l_.grain_bytes;
  // The last kept grain holds bytes past the new end: zeros, so that they
  // do not come back with a later growth.
  IMGFS_RETURN_IF_ERROR(ZeroTailLocked(new_bytes));
  IMGFS_RETURN_IF_ERROR(WriteCapacityLocked(new_bytes, gd_at_, rgd_.empty() ? 0 : rgd_at_));
  const uint64_t old_grains = (bytes_ + gb - 1) / gb;
  bytes_ = new_bytes;
  IMGFS_RETURN_IF_ERROR(ClearEntriesLocked((new_bytes + gb - 1) / gb, old_grains));
  IMGFS_RETURN_IF_ERROR(FlushLocked());
  const uint64_t span = uint64_t(l_.gt_entries) * gb;
  const size_t n = size_t((new_bytes + span - 1) / span);
  gd_.resize(n);
  if (!rgd_.empty()) rgd_.resize(n);
  return Status::OK();
}

Status GrainExtent::ZeroTailLocked(uint64_t bytes) {
  const uint64_t gb = l_.grain_bytes;
  if (bytes % gb == 0) return Status::OK();
  IMGFS_ASSIGN_OR_RETURN(Grain last, LookupLocked(bytes / gb));
  if (last.kind != Grain::kData) return Status::OK();
  IMGFS_RETURN_IF_ERROR(CheckGrainLocked(bytes / gb, last.host));
  const std::vector<uint8_t> zeros(gb - bytes % gb, 0);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(last.host + bytes % gb, zeros.data(), zeros.size()));
  return file_->Sync();
}

Status GrainExtent::Flush() {
  MutexLock lock(mu_);
  return FlushLocked();
}

}  // namespace imgfs::vmdk
