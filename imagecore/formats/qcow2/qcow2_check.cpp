// qcow2 check and repair: every reference the image makes (header, refcount
// structures, snapshot table, bitmaps, each L1 walk) is counted and
// compared with the stored refcounts and the active tables' COPIED flags,
// as `qemu-img check` does, and with a repair mode set right.
#include <algorithm>
#include <cinttypes>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <unordered_set>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/log.h"
#include "imagecore/mutex.h"

namespace imgfs::qcow2 {

namespace {

std::string Fmt(const char* fmt, ...) __attribute__((format(printf, 1, 2)));
std::string Fmt(const char* fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  std::vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  return buf;
}

// An active-table entry whose COPIED flag is checked once refcounts are known.
struct CopiedCheck {
  bool is_l1;
  uint64_t index;    // L1 index, or L2 entry index
  uint64_t entry;    // the entry as stored
  uint64_t cluster;  // the cluster it names
};

}  // namespace

Result<uint64_t> Qcow2Image::BadRefTableEntriesLocked(CheckResult* r) {
  const uint64_t bytes = uint64_t(header_.refcount_table_clusters) << cluster_bits_;
  std::vector<uint8_t> raw(bytes);
  IMGFS_RETURN_IF_ERROR(file_->PRead(header_.refcount_table_offset, raw.data(), bytes));
  uint64_t bad = 0;
  for (uint64_t i = 0; i < bytes / 8; ++i) {
    const uint64_t e = LoadBE64(&raw[i * 8]);
    const uint64_t off = e & kRefTableOffsetMask;
    if (e & ~kRefTableOffsetMask) {
      r->messages.push_back(Fmt("ERROR refcount table entry %" PRIu64 " has reserved bits set", i));
    } else if (off & (cluster_size_ - 1)) {
      r->messages.push_back(
          Fmt("ERROR refcount block %" PRIu64 " is not cluster aligned; refcount table entry corrupted", i));
    } else if (off && off >= file_->Size()) {
      r->messages.push_back(Fmt("ERROR refcount block %" PRIu64 " is outside image", i));
    } else {
      continue;
    }
    ++bad;
  }
  return bad;
}

// Bits an L2 entry (and, with extended L2, its subcluster bitmap) must not
// have: reported, or with `repair` cleared in the cached table.
Status Qcow2Image::CheckEntryBitsLocked(const uint8_t* table, uint64_t l2, uint64_t j, bool repair, CheckResult* r) {
  const uint64_t d = LoadBE64(&table[j * entry_bytes_]);
  const bool compressed = d & kOflagCompressed;
  uint64_t want = compressed ? d : d & ~kL2Reserved;
  const char* what = compressed ? nullptr : (want != d ? "found l2 entry with reserved bits set" : nullptr);
  uint64_t bitmap = 0, want_bitmap = 0;
  if (extended_l2_) {
    bitmap = want_bitmap = LoadBE64(&table[j * entry_bytes_ + 8]);
    const uint64_t alloc = bitmap & 0xffffffffull, zero = bitmap >> 32;
    if (compressed && bitmap) {
      want_bitmap = 0;
      what = "Compressed cluster has non-zero subcluster bitmap";
    } else if (!compressed && !(d & kOffsetMask) && alloc) {
      want_bitmap = bitmap & ~0xffffffffull;
      what = "Unallocated cluster has non-zero subcluster allocation map";
    } else if (!compressed && (alloc & zero)) {
      want_bitmap = alloc | ((zero & ~alloc) << 32);  // the data stays
      what = "Subcluster both allocated and zero";
    }
  }
  if (!what) return Status::OK();
  if (!repair) {
    r->messages.push_back(Fmt("ERROR %s: l2_entry=%" PRIx64, what, d));
    ++r->corruptions;
    return Status::OK();
  }
  IMGFS_ASSIGN_OR_RETURN(uint8_t * t, GetL2Locked(l2));
  StoreBE64(t + j * entry_bytes_, want);
  if (extended_l2_) StoreBE64(t + j * entry_bytes_ + 8, want_bitmap);
  l2_cache_.MarkDirty(l2);
  r->messages.push_back(Fmt("Repairing %s: l2_entry=%" PRIx64, what, d));
  ++r->corruptions_fixed;
  return Status::OK();
}

// Rewrites the snapshot table with every entry's extra data whole (the
// disk size of an incomplete one is the image's, as qemu fills it in).
Status Qcow2Image::CompleteSnapshotEntriesLocked(CheckResult* r) {
  if (header_.version < 3) return Status::OK();
  uint64_t incomplete = 0;
  for (const SnapshotEntry& e : snapshots_) incomplete += e.extra_len < 16;
  if (!incomplete) return Status::OK();
  std::vector<SnapshotEntry> entries = snapshots_;
  for (SnapshotEntry& e : entries) e.extra_len = std::max<uint32_t>(e.extra_len, 24);
  IMGFS_RETURN_IF_ERROR(WriteSnapshotTableLocked(entries));
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));  // the old table's release
  r->messages.push_back(Fmt("Repairing the snapshot table: %" PRIu64 " incomplete entries completed", incomplete));
  r->corruptions_fixed += incomplete;
  return Status::OK();
}

Status Qcow2Image::CheckPassLocked(RepairMode fix, CheckResult* r, std::vector<uint64_t>* plain_refs, bool* rebuild) {
  *r = CheckResult{};
  IMGFS_ASSIGN_OR_RETURN(const uint64_t bad_entries, BadRefTableEntriesLocked(r));
  r->corruptions += bad_entries;
  if (rebuild) *rebuild = bad_entries > 0;
  IMGFS_RETURN_IF_ERROR(LoadRefTableLocked(/*lenient=*/true));
  const uint64_t cs = cluster_size_;
  const uint64_t file_size = file_->Size();
  const uint64_t file_clusters = (file_size + cs - 1) >> cluster_bits_;
  std::vector<uint64_t> refs(file_clusters, 0);
  auto ref = [&](uint64_t off, uint64_t len, const char* what) {
    if (!len) return;
    // As qemu-img check: the last cluster may be partly written, so a
    // region may end less than a cluster past the end of the file.
    if (off >= file_size + cs || len >= file_size + cs - off) {
      r->messages.push_back(Fmt("ERROR: counting reference for region exceeding the end of the file by one "
                                "cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64,
                                off, len));
      ++r->corruptions;
      return;
    }
    const uint64_t last = (off + len - 1) >> cluster_bits_;
    if (last >= refs.size()) refs.resize(last + 1, 0);  // at most one more
    for (uint64_t c = off >> cluster_bits_; c <= last; ++c) ++refs[c];
  };
  auto aligned = [&](uint64_t off, const char* what) {
    if (off & (cs - 1)) {
      r->messages.push_back(Fmt("ERROR %s offset=%" PRIx64 ": not aligned to a cluster", what, off));
      ++r->corruptions;
      return false;
    }
    return true;
  };

  ref(0, cs, "header");
  // What makes qemu refuse the image (or its check) outright.
  if (header_.snapshots_offset & (cs - 1)) {
    r->messages.push_back("ERROR snapshot table offset invalid");
    r->failed = "Invalid argument";
    ++r->corruptions;
  }
  if (std::string bad = BitmapsProblem(); !bad.empty()) {  // qemu cannot open it: its check fails
    r->messages.push_back("ERROR " + bad + " (not repaired: qemu cannot open the image)");
    r->failed = "Invalid argument";
    ++r->corruptions;
  }

  // Version 3 snapshots carry their VM state and disk sizes (16 bytes of
  // extra data at least); Check(kAll) completes them first.
  for (size_t i = 0; header_.version >= 3 && i < snapshots_.size(); ++i) {
    if (snapshots_[i].extra_len >= 16) continue;
    r->messages.push_back(Fmt("ERROR snapshot table entry %zu is incomplete", i));
    ++r->corruptions;
  }
  if ((header_.autoclear_features & kAutoclearDataFileRaw) && !data_file_) {
    if (fix == RepairMode::kAll) {
      header_.autoclear_features &= ~kAutoclearDataFileRaw;
      IMGFS_RETURN_IF_ERROR(WriteHeaderWordLocked(88, header_.autoclear_features));
      r->messages.push_back("Repairing the data-file-raw bit: cleared (the image has no data file)");
      ++r->corruptions_fixed;
    } else {
      r->messages.push_back("ERROR data-file-raw requires a data file");
      r->failed = "data-file-raw requires a data file (check -r all clears the bit)";  // qemu cannot open it
      ++r->corruptions;
    }
  }

  // Bitmaps: directory, each bitmap's table, and the table's data clusters;
  // only while the extension is marked consistent (else, as for qemu,
  // what they hold is leaked).
  if (header_.has_bitmaps_ext && (header_.autoclear_features & kAutoclearBitmaps) && header_.bitmap_directory_size &&
      header_.bitmap_directory_size < (64u << 20)) {
    ref(header_.bitmap_directory_offset, header_.bitmap_directory_size, "bitmap directory");
    std::vector<uint8_t> dir(header_.bitmap_directory_size);
    IMGFS_RETURN_IF_ERROR(file_->PRead(header_.bitmap_directory_offset, dir.data(), dir.size()));
    for (const BitmapDirEntry& e : ParseBitmapDirectory(dir, header_.nb_bitmaps)) {
      const uint64_t tbl = e.table_offset;
      const uint32_t n = e.table_size;
      if (n && aligned(tbl, "bitmap table")) {
        ref(tbl, uint64_t(n) * 8, "bitmap table");
        // One past the end was counted as damage just above; reading it
        // would allocate up to 32 GiB (table_size is 32 bits) for zeros.
        if (!WithinFile(tbl, uint64_t(n) * 8)) continue;
        std::vector<uint8_t> t(uint64_t(n) * 8);
        IMGFS_RETURN_IF_ERROR(file_->PRead(tbl, t.data(), t.size()));
        for (uint32_t i = 0; i < n; ++i) {
          const uint64_t d = LoadBE64(&t[i * 8]) & kOffsetMask;
          if (d && aligned(d, "bitmap data")) ref(d, cs, "bitmap data");
        }
      }
    }
  }

  // L1 walks: the active table (with fragmentation counts and COPIED
  // checks) and every snapshot's.
  std::vector<CopiedCheck> copied;
  std::vector<uint8_t> table(cs);
  // A hostile L1 may name one L2 table thousands of times: its references
  // are counted at every visit (that is the damage to report), but its
  // entries are checked and repaired once, and the messages are bounded.
  std::unordered_set<uint64_t> active_seen;
  constexpr size_t kMaxMessages = 10000;
  constexpr uint64_t kMaxZeroedClusters = 4096;
  uint64_t zeroed_given = 0;
  uint64_t dropped_messages = 0;
  auto trim_messages = [&] {
    if (r->messages.size() <= kMaxMessages) return;
    dropped_messages += r->messages.size() - kMaxMessages;
    r->messages.resize(kMaxMessages);
  };
  auto walk = [&](const std::vector<uint64_t>& l1, bool active) -> Status {
    meta_mu_.AssertHeld();  // run here, under it
    for (uint64_t i = 0; i < l1.size(); ++i) {
      trim_messages();
      if (active && op_progress_ && *op_progress_)  // in guest bytes, as the other subcommands count
        (*op_progress_)(std::min(header_.size, (i + 1) * (l2_entries_ << cluster_bits_)), header_.size);
      uint64_t next_contiguous = 0;  // fragmentation is counted within one L2 table
      if (l1[i] & kL1Reserved) {
        if (active && fix == RepairMode::kAll) {
          r->messages.push_back(Fmt("Repairing L1 entry %" PRIu64 ": reserved bits cleared", i));
          l1_[i] &= ~kL1Reserved;
          // Nothing left but COPIED: qemu's check would take cluster 0 for a table.
          if (!(l1_[i] & kOffsetMask)) l1_[i] = 0;
          l1_dirty_ = true;
          ++r->corruptions_fixed;
        } else {
          r->messages.push_back(Fmt("ERROR found L1 entry with reserved bits set: %" PRIx64, l1[i]));
          ++r->corruptions;
        }
      }
      const uint64_t l2 = l1[i] & kOffsetMask;
      if (!l2 || !aligned(l2, "L2 table")) continue;
      if (l2 >= file_size) {  // qemu-img check: past by a cluster or more
        if (active && fix == RepairMode::kAll) {
          // Nothing of it exists to read: the entry goes, and the range
          // reads from below (or as zeros) instead of failing.
          r->messages.push_back(Fmt("Repairing L1 entry %" PRIu64 ": L2 table offset=%" PRIx64
                                    " lies past the end of the file; now unallocated", i, l2));
          l1_[i] = 0;
          l1_dirty_ = true;
          ++r->corruptions_fixed;
          continue;
        }
        r->messages.push_back(Fmt("ERROR L2 table offset=%" PRIx64 " lies past the end of the file", l2));
        ++r->corruptions;
        continue;
      }
      ref(l2, cs, "L2 table");
      if (active) copied.push_back({true, i, l1[i], l2 >> cluster_bits_});
      const bool first_visit = !active || active_seen.insert(l2).second;
      if (!first_visit) {  // count its references again, check nothing twice
        IMGFS_RETURN_IF_ERROR(file_->PRead(l2, table.data(), cs));
        for (uint64_t j = 0; j < l2_entries_; ++j) {
          const uint64_t d = LoadBE64(&table[j * entry_bytes_]);
          if (d & kOflagCompressed) {
            const CompressedRange cr = DecodeCompressed(d, cluster_bits_);
            ref(cr.host, cr.bytes, "compressed cluster");
          } else if (HasHost(d) && !data_file_ && !((d & kOffsetMask) & (cs - 1))) {
            ref(d & kOffsetMask, cs, "data cluster");
          }
        }
        continue;
      }
      IMGFS_RETURN_IF_ERROR(file_->PRead(l2, table.data(), cs));
      // Guest cluster j of this table, whose bytes lie past the end of the
      // file, gets a zeroed cluster of its own (-r all, active table only).
      auto give_zeroed = [&](uint64_t j, const char* what, uint64_t host) -> Status {
        meta_mu_.AssertHeld();
        // Bounded: a hostile table could ask for gigabytes of zeroed clusters.
        if (++zeroed_given > kMaxZeroedClusters) {
          ++r->corruptions;
          return Status::OK();
        }
        IMGFS_ASSIGN_OR_RETURN(uint64_t fresh, AllocateClustersLocked(1));
        std::vector<uint8_t> zeros(cs, 0);
        IMGFS_RETURN_IF_ERROR(file_->PWrite(fresh, zeros.data(), cs));
        IMGFS_ASSIGN_OR_RETURN(uint8_t * t, GetL2Locked(l2));
        StoreBE64(t + j * entry_bytes_, fresh | kOflagCopied);
        if (extended_l2_) StoreBE64(t + j * entry_bytes_ + 8, 0xffffffffull);
        l2_cache_.MarkDirty(l2);
        r->messages.push_back(Fmt("Repairing %s at offset 0x%" PRIx64
                                  " past the end of the file: now a zeroed cluster at 0x%" PRIx64,
                                  what, host, fresh));
        ++r->corruptions_fixed;
        ++r->allocated_clusters;
        return Status::OK();
      };
      for (uint64_t j = 0; j < l2_entries_; ++j) {
        IMGFS_RETURN_IF_ERROR(CheckEntryBitsLocked(table.data(), l2, j, active && fix == RepairMode::kAll, r));
        const uint64_t d = LoadBE64(&table[j * entry_bytes_]);
        if (d & kOflagCompressed) {
          const CompressedRange cr = DecodeCompressed(d, cluster_bits_);
          if (active && fix == RepairMode::kAll && ((cr.host + cr.bytes - 1) >> cluster_bits_) >= file_clusters) {
            // Nothing of it can be decoded: zeros instead of a read error.
            IMGFS_RETURN_IF_ERROR(give_zeroed(j, "compressed cluster", cr.host));
            continue;
          }
          ref(cr.host, cr.bytes, "compressed cluster");
          if (active) {
            ++r->allocated_clusters;
            ++r->compressed_clusters;
            ++r->fragmented_clusters;  // never contiguous with anything
            if (d & kOflagCopied) {
              r->messages.push_back(Fmt("ERROR: compressed cluster with OFLAG_COPIED: l2_entry=%" PRIx64, d));
              ++r->corruptions;
            }
          }
          continue;
        }
        const uint64_t host = d & kOffsetMask;
        if (!HasHost(d) || !aligned(host, "data cluster")) continue;
        if (active && fix == RepairMode::kAll && !data_file_ && host >= file_clusters * cs) {
          // Past the end of the file the cluster reads as zeros: so it
          // still does, from a cluster of its own.
          IMGFS_RETURN_IF_ERROR(give_zeroed(j, "data cluster", host));
          continue;
        }
        if (!data_file_) ref(host, cs, "data cluster");  // data-file clusters are not refcounted
        if (!active) continue;
        ++r->allocated_clusters;
        if (next_contiguous && host != next_contiguous) ++r->fragmented_clusters;
        next_contiguous = host + cs;
        if (!data_file_) copied.push_back({false, j, d, host >> cluster_bits_});
      }
    }
    return Status::OK();
  };
  if (l1_.size()) ref(header_.l1_table_offset, l1_.size() * 8, "L1 table");
  IMGFS_RETURN_IF_ERROR(walk(l1_, true));
  if (header_.nb_snapshots)
    ref(header_.snapshots_offset, snapshot_table_bytes_, "snapshot table");
  for (const auto& s : snapshots_) {
    // Only where the image was opened for a check alone (else it was refused).
    const char* bad = s.l1_table_offset & (cs - 1)              ? "L1 table is not cluster aligned"
                      : uint64_t(s.l1_size) * 8 > kMaxL1Bytes ? "L1 table is too large"
                                                                : nullptr;
    if (bad) {
      r->messages.push_back(Fmt("ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": %s; snapshot table entry corrupted",
                                s.info.id.c_str(), s.info.name.c_str(), s.l1_table_offset, bad));
      ++r->corruptions;
      continue;
    }
    if (!s.l1_size) continue;
    ref(s.l1_table_offset, uint64_t(s.l1_size) * 8, "snapshot L1 table");
    IMGFS_ASSIGN_OR_RETURN(auto l1, ReadL1Locked(s.l1_table_offset, s.l1_size));
    IMGFS_RETURN_IF_ERROR(walk(l1, false));
  }
  trim_messages();
  if (dropped_messages)
    r->messages.push_back(Fmt("(%" PRIu64 " more messages like these left out)", dropped_messages));
  r->total_clusters = (header_.size + cs - 1) >> cluster_bits_;

  // COPIED must say "refcount is 1" exactly, with the refcounts as stored
  // (reported after the refcount lines, as qemu-img orders them).
  std::vector<std::string> copied_messages;
  for (const auto& c : copied) {
    IMGFS_ASSIGN_OR_RETURN(uint64_t rc, RefcountLocked(c.cluster));
    if ((rc == 1) == ((c.entry & kOflagCopied) != 0)) continue;
    copied_messages.push_back(c.is_l1 ? Fmt("%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu64 " l1_entry=%" PRIx64
                                        " refcount=%" PRIu64,
                                        fix == RepairMode::kAll ? "Repairing" : "ERROR", c.index, c.entry, rc)
                                  : Fmt("%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64,
                                        fix == RepairMode::kAll ? "Repairing" : "ERROR", c.entry, rc));
    if (fix == RepairMode::kAll) ++r->corruptions_fixed;
    else ++r->corruptions;
  }

  // The refcount structures last, so that what a rebuild needs is at hand.
  if (plain_refs) *plain_refs = refs;
  ref(header_.refcount_table_offset, uint64_t(header_.refcount_table_clusters) << cluster_bits_, "refcount table");
  for (uint64_t b : reftable_)
    if (b && aligned(b, "refcount block")) ref(b, cs, "refcount block");
  for (size_t i = 0; i < reftable_.size(); ++i) {
    const uint64_t b = reftable_[i] >> cluster_bits_;
    if (reftable_[i] && b < refs.size() && refs[b] > 1) {
      r->messages.push_back(Fmt("ERROR refcount block %zu refcount=%" PRIu64 " (it overlaps other data)", i, refs[b]));
      ++r->corruptions;
      if (rebuild) *rebuild = true;
    }
  }

  // Stored refcounts against the references found.
  uint64_t highest = 0;
  bool any = false;
  for (uint64_t c = 0; c < refs.size(); ++c) {
    IMGFS_ASSIGN_OR_RETURN(uint64_t rc, RefcountLocked(c));
    const uint64_t want = refs[c];
    if (rc || want) {
      highest = c;
      any = true;
    }
    if (rc == want) continue;
    if (rc < want) {
      const bool repair = fix == RepairMode::kAll;
      r->messages.push_back(Fmt("%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                                repair ? "Repairing" : "ERROR", c, rc, want));
      if (repair) {
        IMGFS_RETURN_IF_ERROR(AddRefLocked(c, int64_t(want - rc)));
        ++r->corruptions_fixed;
      } else {
        ++r->corruptions;
      }
    } else {
      const bool repair = fix != RepairMode::kNone;
      r->messages.push_back(Fmt("%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                                repair ? "Repairing" : "Leaked", c, rc, want));
      if (repair) {
        IMGFS_RETURN_IF_ERROR(AddRefLocked(c, -int64_t(rc - want)));
        ++r->leaks_fixed;
      } else {
        ++r->leaks;
      }
    }
  }
  // The end as it is now: a repair above may have allocated past the old one.
  IMGFS_RETURN_IF_ERROR(
      LeaksPastEndLocked(std::max<uint64_t>(refs.size(), (file_->Size() + cs - 1) >> cluster_bits_), fix, r));
  r->messages.insert(r->messages.end(), copied_messages.begin(), copied_messages.end());
  r->image_end_offset = any ? (highest + 1) << cluster_bits_ : 0;
  if (fix == RepairMode::kAll) IMGFS_RETURN_IF_ERROR(FixCopiedFlagsLocked());
  return Status::OK();
}

// Refcounts past the end of the file are leaks too (a truncated image, a
// crash mid-allocation), from the block that holds `end` on. qemu-img check
// does not look there, and the image still ends where its data does (the
// figure tools shrink volumes to). Only blocks inside the file hold any: the
// work is bounded by the file's size, not by what its reftable claims.
Status Qcow2Image::LeaksPastEndLocked(uint64_t end, RepairMode fix, CheckResult* r) {
  const uint64_t size = file_->Size();
  const uint32_t order = header_.refcount_order;
  const bool repair = fix != RepairMode::kNone;
  constexpr uint64_t kMaxMessages = 1000;  // a block of junk holds millions
  uint64_t found = 0;
  std::vector<uint8_t> blk(cluster_size_);
  for (size_t ti = end / refblock_entries_; ti < reftable_.size(); ++ti) {
    if (!reftable_[ti] || reftable_[ti] >= size) continue;
    IMGFS_ASSIGN_OR_RETURN(const uint8_t* cached, RefBlockForLocked(ti * refblock_entries_, false));
    if (!cached || std::all_of(cached, cached + cluster_size_, [](uint8_t b) { return b == 0; })) continue;
    std::copy(cached, cached + cluster_size_, blk.begin());  // the repairs below change the cached one
    const uint64_t first = ti * refblock_entries_;
    for (uint64_t c = std::max<uint64_t>(end, first); c < first + refblock_entries_; ++c) {
      const uint64_t rc = GetRefcount(blk.data(), c - first, order);
      if (!rc) continue;
      if (++found <= kMaxMessages)
        r->messages.push_back(Fmt("%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=0 (past the end of the file)",
                                  repair ? "Repairing" : "Leaked", c, rc));
      if (!repair) {
        ++r->leaks;
        continue;
      }
      IMGFS_RETURN_IF_ERROR(AddRefLocked(c, -int64_t(rc)));
      ++r->leaks_fixed;
    }
  }
  if (found > kMaxMessages)
    r->messages.push_back(Fmt("(%" PRIu64 " more refcounts past the end of the file left out)", found - kMaxMessages));
  return Status::OK();
}

Result<CheckResult> Qcow2Image::Check(RepairMode mode, const ProgressFn& progress) {
  if (mode != RepairMode::kNone && !file_->writable())
    return ReadOnly(file_->path() + ": open read-write to repair");
  MutexLock l(meta_mu_);
  if (file_->writable() && !read_only()) IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));
  // Refcount structures that cannot be trusted are rebuilt from the
  // references before anything else is repaired (repairs allocate).
  CheckResult scan;
  uint64_t fixed_by_rebuild = 0;
  // The first pass over the tables reports progress; the others are repeats.
  op_progress_ = &progress;
  struct Reset {
    const ProgressFn*& p;
    ~Reset() { p = nullptr; }
  } reset{op_progress_};
  if (mode == RepairMode::kAll) {
    std::vector<uint64_t> plain;
    bool rebuild = false;
    IMGFS_RETURN_IF_ERROR(CheckPassLocked(RepairMode::kNone, &scan, &plain, &rebuild));
    op_progress_ = nullptr;
    if (rebuild) {
      IMGFS_RETURN_IF_ERROR(RebuildRefcountsLocked(plain, header_.refcount_order));
      scan.messages.push_back("Rebuilding refcount structure");
      fixed_by_rebuild = scan.corruptions + scan.leaks;
    } else {
      scan = CheckResult{};
    }
    IMGFS_RETURN_IF_ERROR(CompleteSnapshotEntriesLocked(&scan));
  }
  CheckResult first;
  IMGFS_RETURN_IF_ERROR(CheckPassLocked(mode, &first));
  op_progress_ = nullptr;
  if (fixed_by_rebuild) {
    const uint64_t left = first.corruptions + first.corruptions_fixed + first.leaks + first.leaks_fixed;
    first.corruptions_fixed += fixed_by_rebuild > left ? fixed_by_rebuild - left : 0;
    first.messages.insert(first.messages.begin(), scan.messages.begin(), scan.messages.end());
  }
  if (!first.leaks_fixed && !first.corruptions_fixed) {
    if (mode != RepairMode::kAll || first.corruptions) return first;
  }
  // Write the repairs in the usual order, then clear the flags a repair
  // answers: dirty (stale lazy refcounts) and, after -r all, corrupt.
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  CheckResult second;
  IMGFS_RETURN_IF_ERROR(CheckPassLocked(RepairMode::kNone, &second));
  uint64_t clear = 0;
  if (!second.corruptions && !second.leaks) clear |= kIncompatDirty;
  if (mode == RepairMode::kAll && !second.corruptions) clear |= kIncompatCorrupt;
  if (header_.version >= 3 && (header_.incompatible_features & clear)) {
    header_.incompatible_features &= ~clear;
    IMGFS_RETURN_IF_ERROR(WriteHeaderWordLocked(72, header_.incompatible_features));
    if (!(header_.incompatible_features & (kIncompatDirty | kIncompatCorrupt)) && read_only_reason_ != "opened read-only")
      read_only_reason_ = DamagedHeaderReason();
  }
  if (mode == RepairMode::kAll && !second.corruptions && damaged_.load()) {
    MutexLock d(damage_mu_);
    damaged_.store(false);  // repaired: writable again
    damage_.clear();
    corrupt_bit_written_ = false;
  }
  second.leaks_fixed = first.leaks_fixed;
  second.corruptions_fixed = first.corruptions_fixed;
  second.messages.insert(second.messages.begin(), first.messages.begin(), first.messages.end());
  return second;
}

}  // namespace imgfs::qcow2
