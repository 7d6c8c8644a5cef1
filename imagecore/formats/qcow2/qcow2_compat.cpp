// qemu-img amend -o compat= and refcount_bits=: moving a qcow2 image
// between version 2 (0.10) and version 3 (1.1), and changing the width of
// its refcounts.
//  - Up: the header grows to the v3 layout (112 bytes, no features set);
//    snapshots whose extra data is shorter than v3 asks get a new table.
//  - Down: what v2 cannot express is refused (other refcount widths, a data
//    file, extended L2 entries, zstd-compressed clusters) or taken away:
//    bitmaps are removed (v2 keeps none), zero clusters become clusters of
//    zeros or, with nothing below to show through, unallocated ones. Only
//    then does the header switch, in one write.
#include <algorithm>
#include <cstdio>
#include <set>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/log.h"

namespace imgfs::qcow2 {

Status Qcow2Image::UpgradeLocked() {
  if (std::any_of(snapshots_.begin(), snapshots_.end(), [](const SnapshotEntry& s) { return s.extra_len < 16; })) {
    IMGFS_RETURN_IF_ERROR(WriteSnapshotTableLocked(snapshots_));
    for (SnapshotEntry& s : snapshots_) s.extra_len = 24;
  }
  Header h = header_;
  h.version = 3;
  h.header_length = 112;
  h.incompatible_features = h.compatible_features = h.autoclear_features = 0;
  h.refcount_order = 4;
  h.compression_type = 0;
  return RewriteHeaderLocked(std::move(h), {});
}

Status Qcow2Image::CanDowngradeLocked() {
  if (header_.refcount_order != 4) return InvalidArgument("compat=0.10 requires refcount_bits=16");
  if (data_file_ || (header_.incompatible_features & kIncompatDataFile))
    return InvalidArgument("Cannot downgrade an image with a data file");
  const uint64_t other = header_.incompatible_features & ~(kIncompatDirty | kIncompatCompression);
  if (other) {
    char hex[32];
    std::snprintf(hex, sizeof hex, "0x%llx", (unsigned long long)other);
    return InvalidArgument(std::string("Cannot downgrade an image with incompatible features ") + hex + " set");
  }
  if (header_.compression_type == 0) return Status::OK();
  // zstd is fine while no cluster is compressed with it: v2 reads zlib only.
  for (uint64_t c = 0; c < (header_.size + cluster_size_ - 1) / cluster_size_; ++c) {
    if (c % l2_entries_ == 0 && (c / l2_entries_ >= l1_.size() || !(l1_[c / l2_entries_] & kOffsetMask))) {
      c += l2_entries_ - 1;
      continue;
    }
    IMGFS_ASSIGN_OR_RETURN(uint64_t e, L2EntryLocked(c));
    if (e & kOflagCompressed)
      return InvalidArgument("Cannot downgrade an image with zstd compression type and existing compressed clusters");
  }
  return Status::OK();
}

// One L2 table (of the active L1 or a snapshot's). A data cluster's
// refcount counts the L1 walks that reach it, which for a cluster named
// here alone is the table's own refcount: a new cluster gets that many, a
// zero cluster keeps its host cluster (written with zeros) only when no
// other table names it.
Status Qcow2Image::ExpandZeroClustersInL2Locked(uint64_t l2_off) {
  IMGFS_ASSIGN_OR_RETURN(uint64_t walks, RefcountLocked(l2_off >> cluster_bits_));
  // Each L1 table (the active one, each snapshot's) reaches it once at most.
  if (walks == 0 || walks > 1 + snapshots_.size())
    return Corrupt(file_->path() + ": an L2 table has refcount " + std::to_string(walks) + " but " +
                   std::to_string(1 + snapshots_.size()) + " L1 tables at most");
  const bool below = !header_.backing_file.empty();
  const std::vector<uint8_t> zeros(cluster_size_, 0);
  for (uint64_t i = 0; i < l2_entries_; ++i) {
    IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(l2_off));
    const uint64_t e = LoadBE64(l2 + i * 8);
    if ((e & kOflagCompressed) || !(e & kOflagZero)) continue;
    const uint64_t host = e & kOffsetMask;
    uint64_t ne = 0;
    if (host) {
      IMGFS_ASSIGN_OR_RETURN(uint64_t rc, RefcountLocked(host >> cluster_bits_));
      if (rc < walks) return Corrupt(file_->path() + ": a cluster has fewer references counted than tables name it");
      if (rc == walks) {  // this table's alone: zeros in place
        IMGFS_RETURN_IF_ERROR(CheckOverlapLocked(host, cluster_size_, 0, "a zero cluster"));
        IMGFS_RETURN_IF_ERROR(file_->PWrite(host, zeros.data(), zeros.size()));
        ne = host | (walks == 1 ? kOflagCopied : 0);
      }
    } else if (!below) {
      ne = 0;  // nothing below: unallocated reads as zeros in v2 too
    }
    if (!ne && (host || below)) {
      IMGFS_ASSIGN_OR_RETURN(uint64_t fresh, AllocateClustersLocked(1));
      if (walks > 1) IMGFS_RETURN_IF_ERROR(AddRefLocked(fresh >> cluster_bits_, int64_t(walks) - 1));
      IMGFS_RETURN_IF_ERROR(file_->PWrite(fresh, zeros.data(), zeros.size()));
      ne = fresh | (walks == 1 ? kOflagCopied : 0);
      // The shared host cluster loses this table's walks once the entry is durable.
      for (uint64_t k = 0; host && k < walks; ++k) pending_release_.emplace_back(host, cluster_size_);
    }
    IMGFS_ASSIGN_OR_RETURN(l2, GetL2Locked(l2_off));  // the cache may have moved it
    StoreBE64(l2 + i * 8, ne);
    l2_cache_.MarkDirty(l2_off);
  }
  return Status::OK();
}

Status Qcow2Image::ExpandZeroClustersLocked() {
  std::set<uint64_t> tables;
  auto collect = [&](const std::vector<uint64_t>& l1) {
    for (uint64_t e : l1)
      if (e & kOffsetMask) tables.insert(e & kOffsetMask);
  };
  collect(l1_);
  for (const SnapshotEntry& s : snapshots_) {
    IMGFS_ASSIGN_OR_RETURN(auto l1, ReadL1Locked(s.l1_table_offset, s.l1_size));
    collect(l1);
  }
  uint64_t done = 0;
  for (uint64_t t : tables) {
    IMGFS_RETURN_IF_ERROR(ExpandZeroClustersInL2Locked(t));
    if (op_progress_ && *op_progress_) (*op_progress_)(header_.size * ++done / tables.size(), header_.size);
  }
  // Zeros and refcounts before the entries, the entries before releases.
  return FlushMetadataLocked(/*apply_releases=*/true);
}

Status Qcow2Image::DowngradeLocked() {
  IMGFS_RETURN_IF_ERROR(CanDowngradeLocked());
  if (header_.has_bitmaps_ext) {
    Log(LogLevel::kWarning, file_->path() + ": compat=0.10 keeps no persistent bitmaps: they are removed");
    IMGFS_RETURN_IF_ERROR(RemoveAllBitmapsLocked());
  }
  IMGFS_RETURN_IF_ERROR(PrepareForWriteLocked());
  IMGFS_RETURN_IF_ERROR(ExpandZeroClustersLocked());
  Header h = header_;
  h.version = 2;
  h.header_length = kV2HeaderSize;
  h.incompatible_features = h.compatible_features = h.autoclear_features = 0;
  h.compression_type = 0;
  return RewriteHeaderLocked(std::move(h), {kExtFeatureTable, kExtBitmaps});
}

Status Qcow2Image::ChangeRefcountOrderLocked(uint32_t order) {
  CheckResult r;
  std::vector<uint64_t> refs;
  bool rebuild = false;
  IMGFS_RETURN_IF_ERROR(CheckPassLocked(RepairMode::kNone, &r, &refs, &rebuild));
  if (r.corruptions)
    return Corrupt(file_->path() + ": the image has errors; repair it (imgfs check -r all) before changing refcount_bits");
  // A referenced cluster keeps a stored refcount above its references (a
  // leak, from a snapshot the table no longer lists, say): counting it
  // down would leave its COPIED flags wrong. As in qemu, such a count must
  // fit the new width.
  for (uint64_t c = 0; c < refs.size(); ++c) {
    if (!refs[c]) continue;
    IMGFS_ASSIGN_OR_RETURN(uint64_t stored, RefcountLocked(c));
    refs[c] = std::max(refs[c], stored);
  }
  const uint64_t max = order == 6 ? ~0ull : (1ull << (1u << order)) - 1;
  for (uint64_t c = 0; c < refs.size(); ++c) {
    if (refs[c] <= max) continue;
    char msg[160];
    std::snprintf(msg, sizeof msg, "Cannot decrease refcount entry width to %u bits: Cluster at offset 0x%llx has a refcount of %llu",
                  1u << order, (unsigned long long)(c << cluster_bits_), (unsigned long long)refs[c]);
    return InvalidArgument(msg);
  }
  return RebuildRefcountsLocked(refs, order);
}

}  // namespace imgfs::qcow2
