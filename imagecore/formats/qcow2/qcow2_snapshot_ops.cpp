// qcow2 snapshot control: create, delete and apply internal snapshots, with
// qemu-img snapshot's semantics. Crash ordering for each is given at the
// function; the rule throughout: a refcount goes up before anything durable
// points at the cluster, and comes down only after nothing durable does.
//
// One window is inherent to the format (qemu has it too): when a refcount
// drops to 1, the COPIED flag of the active entry naming that cluster is set
// in the next metadata write-back; a crash between the two leaves a flag
// that `qemu-img check -r all` repairs. Nothing is lost or mis-shared.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <unordered_map>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/log.h"
#include "imagecore/mutex.h"

namespace imgfs::qcow2 {

namespace {
constexpr uint32_t kExtraDataBytes = 24;  // vm_state_size, disk size, icount

std::vector<uint8_t> EncodeSnapshotTable(const std::vector<Qcow2Image::SnapshotEntry>& entries);
}  // namespace

const Qcow2Image::SnapshotEntry* Qcow2Image::FindSnapshot(const std::string& which) const {
  for (const auto& s : snapshots_)
    if (s.info.id == which) return &s;
  for (const auto& s : snapshots_)
    if (s.info.name == which) return &s;
  return nullptr;
}

Result<std::vector<uint64_t>> Qcow2Image::ReadL1Locked(uint64_t offset, uint32_t entries) {
  std::vector<uint8_t> raw(uint64_t(entries) * 8);
  if (entries) IMGFS_RETURN_IF_ERROR(file_->PRead(offset, raw.data(), raw.size()));
  std::vector<uint64_t> l1(entries);
  for (uint32_t i = 0; i < entries; ++i) l1[i] = LoadBE64(&raw[i * 8]);
  return l1;
}

Status Qcow2Image::AddRefsForL1Locked(const std::vector<uint64_t>& l1, int64_t delta) {
  // Count first, change after: a refcount that would overflow (or drop
  // below zero) fails the operation before anything was touched.
  std::unordered_map<uint64_t, uint64_t> uses;  // cluster -> walks through it
  std::vector<uint8_t> table(cluster_size_);
  // A reference past the end of the file is damage: counting it would make
  // refcount blocks for a region that does not exist.
  for (uint64_t e : l1) {
    const uint64_t l2 = e & kOffsetMask;
    if (!l2) continue;
    IMGFS_RETURN_IF_ERROR(CheckWithinFile(l2, cluster_size_, "L2 table"));
    {
      IMGFS_ASSIGN_OR_RETURN(uint8_t * t, GetL2Locked(l2));
      std::memcpy(table.data(), t, cluster_size_);
    }
    ++uses[l2 >> cluster_bits_];
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      const uint64_t d = LoadBE64(&table[j * entry_bytes_]);
      if (d & kOflagCompressed) {
        const CompressedRange cr = DecodeCompressed(d, cluster_bits_);
        IMGFS_RETURN_IF_ERROR(CheckWithinFile(cr.host, cr.bytes, "compressed cluster"));
        for (uint64_t c = cr.host >> cluster_bits_; c <= (cr.host + cr.bytes - 1) >> cluster_bits_; ++c) ++uses[c];
      } else if (d & kOffsetMask) {
        IMGFS_RETURN_IF_ERROR(CheckHostOffset(d & kOffsetMask, "data cluster"));
        if (!data_file_) IMGFS_RETURN_IF_ERROR(CheckWithinFile(d & kOffsetMask, cluster_size_, "data cluster"));
        ++uses[(d & kOffsetMask) >> cluster_bits_];
      }
    }
  }
  const uint32_t order = header_.refcount_order;
  const uint64_t max = order == 6 ? ~0ull : (1ull << (1u << order)) - 1;
  for (const auto& [cluster, n] : uses) {
    IMGFS_ASSIGN_OR_RETURN(uint64_t rc, RefcountLocked(cluster));
    if (delta > 0 && rc > max - n * uint64_t(delta))
      return Unsupported("refcount overflow: refcount_bits=" + std::to_string(1u << order) +
                         " cannot count one more reference to cluster " + std::to_string(cluster));
    if (delta < 0 && rc < n * uint64_t(-delta))
      return FoundDamage("refcount of cluster " + std::to_string(cluster) + " is lower than its references");
  }
  for (const auto& [cluster, n] : uses) IMGFS_RETURN_IF_ERROR(AddRefLocked(cluster, delta * int64_t(n)));
  return Status::OK();
}

Status Qcow2Image::FixCopiedFlagsLocked() {
  for (size_t i = 0; i < l1_.size(); ++i) {
    const uint64_t l2 = l1_[i] & kOffsetMask;
    if (!l2) continue;
    IMGFS_ASSIGN_OR_RETURN(uint64_t rc, RefcountLocked(l2 >> cluster_bits_));
    const uint64_t want = (l1_[i] & ~kOflagCopied) | (rc == 1 ? kOflagCopied : 0);
    if (want != l1_[i]) {
      l1_[i] = want;
      l1_dirty_ = true;
    }
    // Refcounts first (they may load refcount blocks), then the table.
    IMGFS_ASSIGN_OR_RETURN(uint8_t * t, GetL2Locked(l2));
    std::vector<uint64_t> rcs(l2_entries_, 0);
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      const uint64_t d = LoadBE64(t + j * entry_bytes_);
      if (!(d & kOflagCompressed) && (d & kOffsetMask)) {
        IMGFS_ASSIGN_OR_RETURN(rcs[j], RefcountLocked((d & kOffsetMask) >> cluster_bits_));
        IMGFS_ASSIGN_OR_RETURN(t, GetL2Locked(l2));  // the refcount lookup may have evicted it
      }
    }
    bool changed = false;
    for (uint64_t j = 0; j < l2_entries_; ++j) {
      const uint64_t d = LoadBE64(t + j * entry_bytes_);
      uint64_t want_d = d & ~kOflagCopied;
      if (!(d & kOflagCompressed) && (d & kOffsetMask) && rcs[j] == 1) want_d |= kOflagCopied;
      if (want_d != d) {
        StoreBE64(t + j * entry_bytes_, want_d);
        changed = true;
      }
    }
    if (changed) l2_cache_.MarkDirty(l2);
  }
  return Status::OK();
}

namespace {

std::vector<uint8_t> EncodeSnapshotTable(const std::vector<Qcow2Image::SnapshotEntry>& entries) {
  std::vector<uint8_t> out;
  for (const auto& e : entries) {
    const size_t start = out.size();
    const size_t len = 40 + kExtraDataBytes + e.info.id.size() + e.info.name.size();
    out.resize(start + ((len + 7) & ~size_t(7)), 0);
    uint8_t* p = &out[start];
    StoreBE64(p, e.l1_table_offset);
    StoreBE32(p + 8, e.l1_size);
    StoreBE16(p + 12, uint16_t(e.info.id.size()));
    StoreBE16(p + 14, uint16_t(e.info.name.size()));
    StoreBE32(p + 16, e.info.date_sec);
    StoreBE32(p + 20, e.info.date_nsec);
    StoreBE64(p + 24, e.info.vm_clock_nsec);
    StoreBE32(p + 32, uint32_t(std::min<uint64_t>(e.info.vm_state_size, UINT32_MAX)));
    StoreBE32(p + 36, kExtraDataBytes);
    StoreBE64(p + 40, e.info.vm_state_size);
    StoreBE64(p + 48, e.info.virtual_size);
    StoreBE64(p + 56, e.info.icount);  // all ones (-1): not recorded, as qemu writes it
    std::memcpy(p + 64, e.info.id.data(), e.info.id.size());
    std::memcpy(p + 64 + e.info.id.size(), e.info.name.data(), e.info.name.size());
  }
  return out;
}

}  // namespace

// Order: new table (and its refcount) durable -> header names it -> the
// old table's clusters are released.
Status Qcow2Image::WriteSnapshotTableLocked(const std::vector<SnapshotEntry>& entries, bool* header_switched) {
  const std::vector<uint8_t> table = EncodeSnapshotTable(entries);
  const uint64_t clusters = (table.size() + cluster_size_ - 1) >> cluster_bits_;
  uint64_t offset = 0;
  if (clusters) {
    IMGFS_ASSIGN_OR_RETURN(offset, AllocateClustersLocked(clusters));
    overlap_.Add(offset >> cluster_bits_, clusters, kMetaSnapshotTable);
    std::vector<uint8_t> padded(clusters << cluster_bits_, 0);
    std::memcpy(padded.data(), table.data(), table.size());
    Status st = file_->PWrite(offset, padded.data(), padded.size());
    if (st.ok()) st = FlushMetadataLocked(false);
    if (st.ok()) st = file_->Sync();
    if (!st.ok()) {  // nothing names the new table: it is given back
      pending_release_.emplace_back(offset, clusters << cluster_bits_);
      return st;
    }
  } else {
    IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(false));
    IMGFS_RETURN_IF_ERROR(file_->Sync());
  }
  if (header_switched) *header_switched = true;  // from here on the header may name it
  uint8_t fields[12];  // nb_snapshots and snapshots_offset are adjacent
  StoreBE32(fields, uint32_t(entries.size()));
  StoreBE64(fields + 4, offset);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(60, fields, sizeof fields));
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  if (header_.nb_snapshots && snapshot_table_bytes_)
    pending_release_.emplace_back(header_.snapshots_offset, snapshot_table_bytes_);
  header_.nb_snapshots = uint32_t(entries.size());
  header_.snapshots_offset = offset;
  snapshot_table_bytes_ = table.size();
  snapshots_ = entries;
  return Status::OK();
}

// Order: every cluster the active L1 reaches gains a reference and the
// active tables lose COPIED; the copy of the L1 is written; all of that is
// durable before the snapshot table names the copy.
Status Qcow2Image::CreateSnapshot(const std::string& name) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  if (data_file_) return Unsupported("images with an external data file cannot have internal snapshots");
  if (name.size() > 65535) return InvalidArgument("snapshot name is too long");
  MutexLock l(meta_mu_);
  IMGFS_RETURN_IF_ERROR(PrepareForWriteLocked());
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));
  IMGFS_RETURN_IF_ERROR(BeginRefcountWindowLocked());
  bool undone = false;
  Status st = CreateSnapshotLocked(name, &undone);
  // A snapshot that failed and gave back what it took leaves refcounts
  // that add up: the image is clean again.
  if (!st.ok() && undone) (void)EndRefcountWindowLocked(Status::OK());
  return EndRefcountWindowLocked(st);
}

Status Qcow2Image::CreateSnapshotLocked(const std::string& name, bool* undone) {
  unsigned long max_id = 0;
  for (const auto& s : snapshots_) max_id = std::max(max_id, std::strtoul(s.info.id.c_str(), nullptr, 10));

  IMGFS_RETURN_IF_ERROR(AddRefsForL1Locked(l1_, +1));
  SnapshotEntry e;
  bool named = false;
  Status st = AddSnapshotEntryLocked(name, max_id + 1, &e, &named);
  if (!st.ok() && !named) *undone = UndoSnapshotLocked(e);
  return st;
}

// A snapshot the table never named gives back its references and its L1
// copy (a full disk, say), so that its failure leaks nothing. Returns
// whether it could.
bool Qcow2Image::UndoSnapshotLocked(const SnapshotEntry& e) {
  Status st = AddRefsForL1Locked(l1_, -1);
  if (st.ok()) st = FixCopiedFlagsLocked();
  if (st.ok() && e.l1_table_offset) pending_release_.emplace_back(e.l1_table_offset, uint64_t(e.l1_size) * 8);
  if (st.ok()) st = FlushMetadataLocked(true);
  if (!st.ok())
    Log(LogLevel::kWarning, file_->path() + ": what the failed snapshot took is left as leaked clusters: " + st.message());
  return st.ok();
}

Status Qcow2Image::AddSnapshotEntryLocked(const std::string& name, unsigned long id, SnapshotEntry* out,
                                          bool* named) {
  SnapshotEntry& e = *out;
  IMGFS_RETURN_IF_ERROR(FixCopiedFlagsLocked());
  e.l1_size = uint32_t(l1_.size());
  const uint64_t l1_clusters = (uint64_t(e.l1_size) * 8 + cluster_size_ - 1) >> cluster_bits_;
  if (l1_clusters) {
    IMGFS_ASSIGN_OR_RETURN(e.l1_table_offset, AllocateClustersLocked(l1_clusters));
    overlap_.Add(e.l1_table_offset >> cluster_bits_, l1_clusters, kMetaSnapshotL1);
    std::vector<uint8_t> raw(l1_clusters << cluster_bits_, 0);
    for (size_t i = 0; i < l1_.size(); ++i) StoreBE64(&raw[i * 8], l1_[i]);
    IMGFS_RETURN_IF_ERROR(file_->PWrite(e.l1_table_offset, raw.data(), raw.size()));
  }
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  e.info.id = std::to_string(id);
  e.info.name = name;
  e.info.virtual_size = header_.size;
  e.info.date_sec = uint32_t(now.tv_sec);
  e.info.date_nsec = uint32_t(now.tv_nsec);
  e.info.icount = 0;
  std::vector<SnapshotEntry> entries = snapshots_;
  entries.push_back(e);
  IMGFS_RETURN_IF_ERROR(WriteSnapshotTableLocked(entries, named));
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));
  return file_->Sync();
}

// Order: the snapshot table without the entry is durable first; only then
// do the snapshot's clusters lose its references.
Status Qcow2Image::DeleteSnapshot(const std::string& which) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  MutexLock l(meta_mu_);
  if (!FindSnapshot(which)) return NotFound("snapshot '" + which + "' not found");
  IMGFS_RETURN_IF_ERROR(PrepareForWriteLocked());
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));
  IMGFS_RETURN_IF_ERROR(BeginRefcountWindowLocked());
  return EndRefcountWindowLocked(DeleteSnapshotLocked(which));
}

Status Qcow2Image::DeleteSnapshotLocked(const std::string& which) {
  const SnapshotEntry victim = *FindSnapshot(which);
  IMGFS_ASSIGN_OR_RETURN(auto snap_l1, ReadL1Locked(victim.l1_table_offset, victim.l1_size));
  std::vector<SnapshotEntry> entries;
  for (const auto& s : snapshots_)
    if (s.info.id != victim.info.id) entries.push_back(s);
  IMGFS_RETURN_IF_ERROR(WriteSnapshotTableLocked(entries));
  IMGFS_RETURN_IF_ERROR(AddRefsForL1Locked(snap_l1, -1));
  if (victim.l1_size) pending_release_.emplace_back(victim.l1_table_offset, uint64_t(victim.l1_size) * 8);
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));  // decrements, then the L1 release
  IMGFS_RETURN_IF_ERROR(FixCopiedFlagsLocked());
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));
  return file_->Sync();
}

// Order: the snapshot's clusters gain the active references; the new active
// L1 and the header (size, L1) are durable; only then do the clusters of
// the old active state lose theirs.
Status Qcow2Image::ApplySnapshot(const std::string& which) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  MutexLock l(meta_mu_);
  if (!FindSnapshot(which)) return NotFound("snapshot '" + which + "' not found");
  IMGFS_RETURN_IF_ERROR(PrepareForWriteLocked());
  IMGFS_RETURN_IF_ERROR(BeginRefcountWindowLocked());
  return EndRefcountWindowLocked(ApplySnapshotLocked(which));
}

Status Qcow2Image::ApplySnapshotLocked(const std::string& which) {
  const SnapshotEntry snap = *FindSnapshot(which);
  if (snap.info.virtual_size != header_.size) {
    tracked_.clear();  // no longer exact at either size: they stay in_use
    IMGFS_RETURN_IF_ERROR(MarkBitmapsInUseLocked(true));
  } else {
    MarkDirtyLocked(0, header_.size);  // the spec counts a snapshot switch as a change
  }
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));
  IMGFS_ASSIGN_OR_RETURN(auto new_l1, ReadL1Locked(snap.l1_table_offset, snap.l1_size));
  new_l1.resize(std::max<uint64_t>(new_l1.size(), L1EntriesFor(snap.info.virtual_size, cluster_bits_, extended_l2_)), 0);
  for (auto& e : new_l1) e &= ~kOflagCopied;  // shared with the snapshot now
  IMGFS_RETURN_IF_ERROR(AddRefsForL1Locked(new_l1, +1));
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(false));

  // The active L1 stays where it is if the snapshot's fits, else moves.
  const uint64_t old_clusters = (l1_.size() * 8 + cluster_size_ - 1) >> cluster_bits_;
  const uint64_t new_clusters = (new_l1.size() * 8 + cluster_size_ - 1) >> cluster_bits_;
  uint64_t l1_offset = header_.l1_table_offset;
  const bool moved = new_clusters > old_clusters;
  if (moved) {
    IMGFS_ASSIGN_OR_RETURN(l1_offset, AllocateClustersLocked(new_clusters));
    overlap_.Add(l1_offset >> cluster_bits_, new_clusters, kMetaL1);
    IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(false));
  }
  std::vector<uint8_t> raw(std::max(old_clusters, new_clusters) << cluster_bits_, 0);
  for (size_t i = 0; i < new_l1.size(); ++i) StoreBE64(&raw[i * 8], new_l1[i]);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(l1_offset, raw.data(), (moved ? new_clusters : old_clusters) << cluster_bits_));
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  uint8_t fields[24];  // size (24), crypt_method (32), l1_size (36), l1_table_offset (40)
  StoreBE64(fields, snap.info.virtual_size);
  StoreBE32(fields + 8, header_.crypt_method);
  StoreBE32(fields + 12, uint32_t(new_l1.size()));
  StoreBE64(fields + 16, l1_offset);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(24, fields, sizeof fields));
  IMGFS_RETURN_IF_ERROR(file_->Sync());

  std::vector<uint64_t> old_l1 = std::move(l1_);
  const uint64_t old_offset = header_.l1_table_offset;
  l1_ = std::move(new_l1);
  l1_dirty_ = false;
  header_.size = snap.info.virtual_size;
  header_.l1_size = uint32_t(l1_.size());
  header_.l1_table_offset = l1_offset;
  IMGFS_RETURN_IF_ERROR(AddRefsForL1Locked(old_l1, -1));
  if (moved && old_clusters) pending_release_.emplace_back(old_offset, old_clusters << cluster_bits_);
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));
  IMGFS_RETURN_IF_ERROR(FixCopiedFlagsLocked());
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));
  return file_->Sync();
}

}  // namespace imgfs::qcow2
