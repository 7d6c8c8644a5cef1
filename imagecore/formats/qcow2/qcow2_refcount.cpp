// qcow2 host cluster management: refcounts, allocation at the end of the
// file, refcount table growth, and the ordered write-back of metadata.
#include <algorithm>
#include <cstdio>
#include <cstring>


#include "base/endian.h"
#include "imagecore/read_epoch.h"
#include "formats/qcow2/qcow2_image.h"

namespace imgfs::qcow2 {

uint64_t GetRefcount(const uint8_t* blk, uint64_t i, uint32_t order) {
  switch (order) {
    case 3: return blk[i];
    case 4: return LoadBE16(blk + 2 * i);
    case 5: return LoadBE32(blk + 4 * i);
    case 6: return LoadBE64(blk + 8 * i);
    default: {  // sub-byte widths: bit 0 is the least significant
      const uint32_t bits = 1u << order, per_byte = 8 / bits;
      return (blk[i / per_byte] >> ((i % per_byte) * bits)) & ((1u << bits) - 1);
    }
  }
}

namespace {

void SetRefcount(uint8_t* blk, uint64_t i, uint32_t order, uint64_t v) {
  switch (order) {
    case 3: blk[i] = uint8_t(v); return;
    case 4: StoreBE16(blk + 2 * i, uint16_t(v)); return;
    case 5: StoreBE32(blk + 4 * i, uint32_t(v)); return;
    case 6: StoreBE64(blk + 8 * i, v); return;
    default: {
      const uint32_t bits = 1u << order, per_byte = 8 / bits;
      const uint32_t shift = (i % per_byte) * bits, mask = ((1u << bits) - 1) << shift;
      blk[i / per_byte] = uint8_t((blk[i / per_byte] & ~mask) | ((v << shift) & mask));
    }
  }
}

}  // namespace

Status Qcow2Image::LoadRefTableLocked(bool lenient) {
  if (reftable_loaded_) return Status::OK();
  const uint64_t bytes = uint64_t(header_.refcount_table_clusters) << cluster_bits_;
  std::vector<uint8_t> raw(bytes);
  IMGFS_RETURN_IF_ERROR(file_->PRead(header_.refcount_table_offset, raw.data(), bytes));
  std::vector<uint64_t> table(bytes / 8);
  for (size_t i = 0; i < table.size(); ++i) {
    table[i] = LoadBE64(&raw[i * 8]) & kRefTableOffsetMask;
    if (!table[i]) continue;
    // A block that is not where a block can be: writing it back would put
    // garbage counts at a garbage place (and grow the file toward it).
    if (!(table[i] & (cluster_size_ - 1)) && WithinFile(table[i], cluster_size_)) continue;
    if (lenient) {
      table[i] = 0;  // a check counts it as absent (and reports it)
      continue;
    }
    IMGFS_RETURN_IF_ERROR(CheckHostOffset(table[i], "refcount block"));
    IMGFS_RETURN_IF_ERROR(CheckWithinFile(table[i], cluster_size_, "refcount block"));
  }
  reftable_ = std::move(table);
  reftable_loaded_ = true;
  return Status::OK();
}

Result<uint8_t*> Qcow2Image::RefBlockForLocked(uint64_t cluster, bool create) {
  IMGFS_RETURN_IF_ERROR(LoadRefTableLocked());
  const uint64_t ti = cluster / refblock_entries_;
  auto flush_all = [&] {
        meta_mu_.AssertHeld();  // a cache callback, under it
        return FlushMetadataLocked(false);
      };
  if (ti >= reftable_.size()) {
    if (!create) return static_cast<uint8_t*>(nullptr);
    IMGFS_RETURN_IF_ERROR(GrowRefTableLocked(ti + 1));
  }
  if (reftable_[ti] == 0) {
    if (!create) return static_cast<uint8_t*>(nullptr);
    // The new block goes at the end of the file and counts itself: set its
    // own refcount once it exists (it may live in a block of its own).
    const uint64_t b = end_cluster_++;
    reftable_[ti] = b << cluster_bits_;
    reftable_dirty_ = true;
    IMGFS_RETURN_IF_ERROR(refblock_cache_.Create(b << cluster_bits_, flush_all).status());
    overlap_.Add(b, 1, kMetaRefBlock);
    IMGFS_RETURN_IF_ERROR(AddRefLocked(b, 1));
  }
  return refblock_cache_.Get(
      reftable_[ti],
      [&](uint64_t off, uint8_t* buf) { return file_->PRead(off, buf, cluster_size_); }, flush_all);
}

Status Qcow2Image::AddRefLocked(uint64_t cluster, int64_t delta) {
  IMGFS_ASSIGN_OR_RETURN(uint8_t * blk, RefBlockForLocked(cluster, /*create=*/delta > 0));
  if (!blk) return FoundDamage("releasing a cluster that has no refcount");
  const uint32_t order = header_.refcount_order;
  const uint64_t max = order == 6 ? ~0ull : (1ull << (1u << order)) - 1;
  const uint64_t cur = GetRefcount(blk, cluster % refblock_entries_, order);
  const uint64_t down = delta < 0 ? 0 - uint64_t(delta) : 0;  // INT64_MIN too
  if (delta > 0 && cur > max - uint64_t(delta))
    return Unsupported(file_->path() + ": refcount overflow");
  if (cur < down) return FoundDamage("refcount would drop below zero");
  StoreRefLocked(blk, cluster, cur, cur + uint64_t(delta));
  return Status::OK();
}

Status Qcow2Image::SetRefLocked(uint64_t cluster, uint64_t value) {
  IMGFS_ASSIGN_OR_RETURN(uint8_t * blk, RefBlockForLocked(cluster, /*create=*/value > 0));
  if (!blk) return value ? FoundDamage("setting a refcount that has no block") : Status::OK();
  const uint32_t order = header_.refcount_order;
  if (order < 6 && value >> (1u << order)) return Unsupported(file_->path() + ": refcount overflow");
  StoreRefLocked(blk, cluster, GetRefcount(blk, cluster % refblock_entries_, order), value);
  return Status::OK();
}

void Qcow2Image::StoreRefLocked(uint8_t* blk, uint64_t cluster, uint64_t cur, uint64_t value) {
  SetRefcount(blk, cluster % refblock_entries_, header_.refcount_order, value);
  refblock_cache_.MarkDirty(reftable_[cluster / refblock_entries_]);
  if (cur && !value) ClusterFreedLocked(cluster);
}

void Qcow2Image::ClusterFreedLocked(uint64_t cluster) {
  overlap_.Remove(cluster);
  l2_cache_.Drop(cluster << cluster_bits_);  // a freed table must never be written back over new data
  if (cluster == 0) return;
  const uint64_t tag = CloseReadEpoch();
  // A discard frees clusters in order: they join the last run, whose tag
  // becomes the newest (tags still grow along the queue).
  if (!quarantine_.empty() && quarantine_.back().start + quarantine_.back().count == cluster) {
    ++quarantine_.back().count;
    quarantine_.back().tag = tag;
  } else if (quarantine_.size() < kMaxFreeTracked) {
    quarantine_.push_back({cluster, 1, tag});
  }
}

Status Qcow2Image::FindFreeLocked() {
  if (free_scanned_) return Status::OK();
  free_scanned_ = true;
  // Clusters freed since the open wait in quarantine: not free yet.
  std::vector<std::pair<uint64_t, uint64_t>> waiting;  // [start, end), sorted
  for (const FreedRun& q : quarantine_) waiting.emplace_back(q.start, q.start + q.count);
  std::sort(waiting.begin(), waiting.end());
  auto is_waiting = [&](uint64_t c) {
    auto it = std::upper_bound(waiting.begin(), waiting.end(), std::make_pair(c, UINT64_MAX));
    return it != waiting.begin() && c < std::prev(it)->second;
  };
  const uint32_t order = header_.refcount_order;
  for (uint64_t ti = 0; ti < reftable_.size() && ti * refblock_entries_ < end_cluster_; ++ti) {
    if (!reftable_[ti]) continue;  // clusters without a block are past what ever was used
    IMGFS_ASSIGN_OR_RETURN(uint8_t * blk, RefBlockForLocked(ti * refblock_entries_, false));
    if (!blk) continue;
    const uint64_t first = ti * refblock_entries_;
    const uint64_t last = std::min(first + refblock_entries_, end_cluster_);
    for (uint64_t c = std::max<uint64_t>(first, 1); c < last; ++c) {
      if (free_.size() + quarantine_.size() >= kMaxFreeTracked) return Status::OK();
      if (!GetRefcount(blk, c - first, order) && !is_waiting(c)) free_.insert(c);
    }
  }
  return Status::OK();
}

Status Qcow2Image::TrimTailLocked() {
  IMGFS_RETURN_IF_ERROR(FindEndLocked());
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));
  uint64_t last = end_cluster_;
  while (last > 1) {
    IMGFS_ASSIGN_OR_RETURN(uint64_t rc, RefcountLocked(last - 1));
    if (rc) break;
    --last;
  }
  const uint64_t end = last << cluster_bits_;
  if (end >= file_->Size()) return Status::OK();
  // Everything past `end` is free, and nothing reads this image any more.
  IMGFS_RETURN_IF_ERROR(file_->Truncate(end));
  end_cluster_ = last;
  return file_->Sync();
}

void Qcow2Image::ReleaseQuarantineLocked() {
  if (quarantine_.empty()) return;
  // Tags grow along the queue: release from the front while no read that
  // could still use a cluster is in flight.
  const uint64_t oldest = OldestOpenRead();
  while (!quarantine_.empty() && quarantine_.front().tag < oldest) {
    const FreedRun run = quarantine_.front();
    quarantine_.pop_front();
    // Punched before any of it can be handed out again: the pointers that
    // freed it are durable (releases apply after a sync), and no read uses it.
    DiscardFreeLocked(run.start, run.count);
    for (uint64_t c = run.start; c < run.start + run.count && free_.size() < kMaxFreeTracked; ++c) free_.insert(c);
  }
}

void Qcow2Image::DiscardFreeLocked(uint64_t c, uint64_t n) {
  uint64_t from = c;
  for (uint64_t i = c; i <= c + n; ++i) {
    bool free = false;
    if (i < c + n) {
      Result<uint64_t> rc = RefcountLocked(i);
      free = rc.ok() && rc.value() == 0;  // a repair may have counted it again
    }
    if (free) continue;
    if (i > from) file_->Discard(from << cluster_bits_, (i - from) << cluster_bits_);
    from = i + 1;
  }
}

Result<uint64_t> Qcow2Image::TakeFreeRunLocked(uint64_t max_n, uint64_t* got) {
  ReleaseQuarantineLocked();
  *got = 0;
  while (!free_.empty()) {
    const uint64_t c = *free_.begin();
    free_.erase(free_.begin());
    IMGFS_ASSIGN_OR_RETURN(uint64_t rc, RefcountLocked(c));
    if (rc) continue;  // counted again meanwhile (a repair)
    *got = 1;
    while (*got < max_n) {
      auto next = free_.find(c + *got);
      if (next == free_.end()) break;
      free_.erase(next);
      IMGFS_ASSIGN_OR_RETURN(uint64_t rc2, RefcountLocked(c + *got));
      if (rc2) break;
      ++*got;
    }
    return c;
  }
  return uint64_t{0};
}

Result<uint64_t> Qcow2Image::TakeFreeLocked(uint64_t n) {
  uint64_t got = 0;
  if (n == 1) return TakeFreeRunLocked(1, &got);
  ReleaseQuarantineLocked();
  // First fit for a run among the lowest free clusters; the scan is short
  // (it runs for every multi-cluster allocation), and a miss grows the file.
  uint64_t run_start = 0, run_len = 0, prev = 0, scanned = 0;
  for (auto it = free_.begin(); it != free_.end() && scanned < 1024; ++it, ++scanned) {
    if (run_len && *it == prev + 1) {
      ++run_len;
    } else {
      run_start = *it;
      run_len = 1;
    }
    prev = *it;
    if (run_len == n) {
      free_.erase(free_.find(run_start), std::next(it));
      for (uint64_t c = run_start; c < run_start + n; ++c) {
        IMGFS_ASSIGN_OR_RETURN(uint64_t rc, RefcountLocked(c));
        if (rc) return uint64_t{0};  // counted again meanwhile: the rest of the run is lost to reuse, not to data
      }
      return run_start;
    }
  }
  return uint64_t{0};
}

Result<uint64_t> Qcow2Image::RefcountLocked(uint64_t cluster) {
  IMGFS_ASSIGN_OR_RETURN(uint8_t * blk, RefBlockForLocked(cluster, /*create=*/false));
  if (!blk) return uint64_t{0};
  return GetRefcount(blk, cluster % refblock_entries_, header_.refcount_order);
}

Status Qcow2Image::FindEndLocked() {
  if (end_known_) return Status::OK();
  IMGFS_RETURN_IF_ERROR(LoadRefTableLocked());
  uint64_t end = (file_->Size() + cluster_size_ - 1) >> cluster_bits_;
  // Refcounts may describe clusters past EOF (e.g. preallocated metadata):
  // allocate after the last cluster with a non-zero refcount too.
  std::vector<uint8_t> blk(cluster_size_);
  for (size_t ti = reftable_.size(); ti-- > 0;) {
    if (!reftable_[ti]) continue;
    IMGFS_RETURN_IF_ERROR(file_->PRead(reftable_[ti], blk.data(), cluster_size_));
    uint64_t last = refblock_entries_;
    for (uint64_t i = refblock_entries_; i-- > 0;) {
      if (GetRefcount(blk.data(), i, header_.refcount_order)) {
        last = i;
        break;
      }
    }
    if (last != refblock_entries_) {
      end = std::max(end, ti * refblock_entries_ + last + 1);
      break;
    }
  }
  // A crash leaves at most the clusters being allocated counted past the
  // end; counts far beyond it are garbage (a damaged refcount block), and
  // allocating after them would grow the file toward it.
  const uint64_t eof = (file_->Size() + cluster_size_ - 1) >> cluster_bits_;
  if (end > eof + std::max<uint64_t>(1, (1ull << 30) >> cluster_bits_)) {
    char buf[160];
    std::snprintf(buf, sizeof buf, "refcounts count cluster %llu, far past the end of the file (cluster %llu)",
                  static_cast<unsigned long long>(end - 1), static_cast<unsigned long long>(eof));
    return FoundDamage(buf);
  }
  end_cluster_ = std::max<uint64_t>(end, 1);
  end_known_ = true;
  return Status::OK();
}

Result<uint64_t> Qcow2Image::AllocateClustersLocked(uint64_t n) { return AllocateLocked(n, true, nullptr); }

Result<uint64_t> Qcow2Image::AllocateRunLocked(uint64_t max_n, uint64_t* got) {
  return AllocateLocked(max_n, false, got);
}

Result<uint64_t> Qcow2Image::AllocateLocked(uint64_t n, bool exact, uint64_t* got) {
  IMGFS_RETURN_IF_ERROR(FindEndLocked());
  IMGFS_RETURN_IF_ERROR(FindFreeLocked());
  uint64_t start = 0, taken = n;
  if (exact) {
    IMGFS_ASSIGN_OR_RETURN(start, TakeFreeLocked(n));
  } else {
    IMGFS_ASSIGN_OR_RETURN(start, TakeFreeRunLocked(n, &taken));
  }
  if (!start) {
    taken = n;
    start = end_cluster_;
    if (((start + n) << cluster_bits_) >> cluster_bits_ != start + n || ((start + n) << cluster_bits_) > kOffsetMask)
      return NoSpace(file_->path() + ": host offsets exhausted");
    end_cluster_ += n;
  }
  for (uint64_t i = 0; i < taken; ++i) IMGFS_RETURN_IF_ERROR(AddRefLocked(start + i, 1));
  // A cluster the refcounts call free but the metadata uses: damage.
  IMGFS_RETURN_IF_ERROR(CheckOverlapLocked(start << cluster_bits_, taken << cluster_bits_, 0, "a new cluster"));
  if (got) *got = taken;
  return start << cluster_bits_;
}

Status Qcow2Image::GrowRefTableLocked(uint64_t min_entries) {
  const uint64_t per_cluster = cluster_size_ / 8;
  uint64_t entries = std::max<uint64_t>(min_entries, reftable_.size() * 2);
  uint64_t clusters, start;
  for (;;) {
    entries = (entries + per_cluster - 1) / per_cluster * per_cluster;
    clusters = entries / per_cluster;
    start = end_cluster_;
    // Leave room for the table itself and the blocks that describe it.
    if (entries * refblock_entries_ >= 2 * (start + clusters) + 64) break;
    entries *= 2;
  }
  if ((clusters << cluster_bits_) > kMaxRefTableBytes)
    return NoSpace(file_->path() + ": refcount table would exceed its maximum size");
  const uint64_t old_offset = header_.refcount_table_offset;
  const uint64_t old_clusters = header_.refcount_table_clusters;
  end_cluster_ += clusters;
  reftable_.resize(entries, 0);
  for (uint64_t i = 0; i < clusters; ++i) IMGFS_RETURN_IF_ERROR(AddRefLocked(start + i, 1));
  overlap_.Add(start, clusters, kMetaRefTable);

  // Invariant: the header may name the new table only once the table and
  // every block it points to are durable.
  header_.refcount_table_offset = start << cluster_bits_;
  header_.refcount_table_clusters = uint32_t(clusters);
  IMGFS_RETURN_IF_ERROR(refblock_cache_.WriteBack(
      [&](uint64_t off, const uint8_t* b) { return file_->PWrite(off, b, cluster_size_); }));
  IMGFS_RETURN_IF_ERROR(WriteRefTableLocked());
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  uint8_t fields[12];
  StoreBE64(fields, header_.refcount_table_offset);
  StoreBE32(fields + 8, header_.refcount_table_clusters);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(48, fields, sizeof fields));
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  // The old table is unreferenced now; free it at the next write-back.
  for (uint64_t i = 0; i < old_clusters; ++i)
    pending_release_.emplace_back(old_offset + (i << cluster_bits_), cluster_size_);
  return Status::OK();
}

// A new refcount table and blocks, made from `refs` (the references a check
// counted, refcount structures left out) and placed past everything else,
// so the damaged ones are never read again. The header switches to the new
// table in one write after the new structure is durable: a crash before it
// leaves the old structure as it was.
Status Qcow2Image::RebuildRefcountsLocked(const std::vector<uint64_t>& refs, uint32_t order) {
  const uint64_t per = (cluster_size_ * 8) >> order;
  const uint64_t start =
      std::max<uint64_t>(refs.size(), (file_->Size() + cluster_size_ - 1) >> cluster_bits_);
  uint64_t nb = 0, nt = 0;  // blocks and table clusters, which count themselves
  for (;;) {
    const uint64_t nb2 = (start + nb + nt + per - 1) / per;
    const uint64_t nt2 = (nb2 * 8 + cluster_size_ - 1) / cluster_size_;
    if (nb2 == nb && nt2 == nt) break;
    nb = nb2, nt = nt2;
  }
  const uint64_t max = order == 6 ? ~0ull : (1ull << (1u << order)) - 1;
  std::vector<uint8_t> blocks(nb * cluster_size_, 0);
  auto set = [&](uint64_t c, uint64_t v) { SetRefcount(&blocks[(c / per) * cluster_size_], c % per, order, v); };
  for (uint64_t c = 0; c < refs.size(); ++c) {
    if (refs[c] > max)
      return Unsupported(file_->path() + ": refcount overflow: cluster " + std::to_string(c) + " has " +
                         std::to_string(refs[c]) + " references");
    if (refs[c]) set(c, refs[c]);
  }
  for (uint64_t c = start; c < start + nb + nt; ++c) set(c, 1);
  std::vector<uint8_t> table(nt * cluster_size_, 0);
  std::vector<uint64_t> entries(nt * cluster_size_ / 8, 0);
  for (uint64_t i = 0; i < nb; ++i) {
    entries[i] = (start + i) << cluster_bits_;
    StoreBE64(&table[i * 8], entries[i]);
  }
  const uint64_t table_off = (start + nb) << cluster_bits_;
  IMGFS_RETURN_IF_ERROR(file_->PWrite(start << cluster_bits_, blocks.data(), blocks.size()));
  IMGFS_RETURN_IF_ERROR(file_->PWrite(table_off, table.data(), table.size()));
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  // Table, its size and (v3) the width: one write inside the first sector.
  uint8_t raw[100];
  IMGFS_RETURN_IF_ERROR(file_->PRead(0, raw, sizeof raw));
  StoreBE64(raw + 48, table_off);
  StoreBE32(raw + 56, uint32_t(nt));
  if (header_.version >= 3) StoreBE32(raw + 96, order);
  const size_t end = header_.version >= 3 ? 100 : 60;
  IMGFS_RETURN_IF_ERROR(file_->PWrite(48, raw + 48, end - 48));
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  header_.refcount_order = order;
  refblock_entries_ = per;
  for (uint64_t b : reftable_)
    if (b) refblock_cache_.Drop(b);  // the old blocks, dirty or not, are gone
  header_.refcount_table_offset = table_off;
  header_.refcount_table_clusters = uint32_t(nt);
  reftable_ = std::move(entries);
  reftable_loaded_ = true;
  reftable_dirty_ = false;
  pending_release_.clear();  // the new counts already leave those clusters out
  end_cluster_ = start + nb + nt;
  end_known_ = true;
  // Free clusters and metadata are found again from the new structure.
  free_.clear();
  free_scanned_ = false;
  overlap_built_ = false;
  return Status::OK();
}

Status Qcow2Image::WriteRefTableLocked() {
  IMGFS_RETURN_IF_ERROR(CheckOverlapLocked(header_.refcount_table_offset,
                                           uint64_t(header_.refcount_table_clusters) << cluster_bits_,
                                           kMetaRefTable, "the refcount table"));
  std::vector<uint8_t> raw(uint64_t(header_.refcount_table_clusters) << cluster_bits_, 0);
  for (size_t i = 0; i < reftable_.size() && i * 8 < raw.size(); ++i) StoreBE64(&raw[i * 8], reftable_[i]);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(header_.refcount_table_offset, raw.data(), raw.size()));
  reftable_dirty_ = false;
  return Status::OK();
}

Status Qcow2Image::WriteL1Locked() {
  IMGFS_RETURN_IF_ERROR(CheckOverlapLocked(header_.l1_table_offset, l1_.size() * 8, kMetaL1, "the L1 table"));
  std::vector<uint8_t> raw(l1_.size() * 8);
  for (size_t i = 0; i < l1_.size(); ++i) StoreBE64(&raw[i * 8], l1_[i]);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(header_.l1_table_offset, raw.data(), raw.size()));
  l1_dirty_ = false;
  return Status::OK();
}

Status Qcow2Image::FlushMetadataLocked(bool apply_releases) {
  auto write_refblock = [&](uint64_t off, const uint8_t* b) {
    meta_mu_.AssertHeld();
    IMGFS_RETURN_IF_ERROR(CheckOverlapLocked(off, cluster_size_, kMetaRefBlock, "a refcount block"));
    return file_->PWrite(off, b, cluster_size_);
  };
  auto write_l2 = [&](uint64_t off, const uint8_t* b) {
    meta_mu_.AssertHeld();
    IMGFS_RETURN_IF_ERROR(CheckOverlapLocked(off, cluster_size_, kMetaL2, "an L2 table"));
    return file_->PWrite(off, b, cluster_size_);
  };
  const bool rc_dirty = refblock_cache_.HasDirty() || reftable_dirty_;
  const bool map_dirty = l2_cache_.HasDirty() || l1_dirty_;
  if (rc_dirty) {
    IMGFS_RETURN_IF_ERROR(refblock_cache_.WriteBack(write_refblock));
    if (reftable_dirty_) {
      IMGFS_RETURN_IF_ERROR(file_->Sync());  // blocks before the table that points at them
      IMGFS_RETURN_IF_ERROR(WriteRefTableLocked());
    }
  }
  if (map_dirty) {
    // Refcounts and guest data before any pointer to them.
    if (data_file_) IMGFS_RETURN_IF_ERROR(data_file_->Sync());
    IMGFS_RETURN_IF_ERROR(file_->Sync());
    if (l2_cache_.HasDirty()) {
      IMGFS_RETURN_IF_ERROR(l2_cache_.WriteBack(write_l2));
      if (l1_dirty_) IMGFS_RETURN_IF_ERROR(file_->Sync());  // L2 tables before L1
    }
    if (l1_dirty_) IMGFS_RETURN_IF_ERROR(WriteL1Locked());
  }
  if (apply_releases && !pending_release_.empty()) {
    // The pointers that replaced these clusters must be durable before the
    // refcounts drop, or a crash could leave a live cluster marked free.
    IMGFS_RETURN_IF_ERROR(file_->Sync());
    auto releases = std::move(pending_release_);
    pending_release_.clear();
    for (auto [off, len] : releases) {
      for (uint64_t c = off >> cluster_bits_; c <= (off + len - 1) >> cluster_bits_; ++c)
        IMGFS_RETURN_IF_ERROR(AddRefLocked(c, -1));
    }
    IMGFS_RETURN_IF_ERROR(refblock_cache_.WriteBack(write_refblock));
  }
  return Status::OK();
}

}  // namespace imgfs::qcow2
