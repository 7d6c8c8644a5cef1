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

// What one check pass counts as it goes.
struct CheckPass {
  RepairMode fix = RepairMode::kNone;
  CheckResult* r = nullptr;
  uint64_t cs = 0;  // cluster size
  unsigned cluster_bits = 0;
  uint64_t file_size = 0, file_clusters = 0;
  std::vector<uint64_t> refs;  // references found, per cluster
  std::vector<CopiedCheck> copied;
  // A hostile L1 may name one L2 table thousands of times: its references
  // are counted at every visit (that is the damage to report), but its
  // entries are checked and repaired once, and the messages are bounded.
  std::unordered_set<uint64_t> active_seen;
  static constexpr size_t kMaxMessages = 10000;
  static constexpr uint64_t kMaxZeroedClusters = 4096;
  uint64_t zeroed_given = 0, dropped_messages = 0;
  std::vector<uint8_t> table;  // one L2 table

  bool repair_all() const { return fix == RepairMode::kAll; }
  void Error(std::string message) {
    r->messages.push_back(std::move(message));
    ++r->corruptions;
  }
  void Ref(uint64_t off, uint64_t len) {
    if (!len) return;
    // As qemu-img check: the last cluster may be partly written, so a
    // region may end less than a cluster past the end of the file.
    if (off >= file_size + cs || len >= file_size + cs - off) {
      Error(Fmt("ERROR: counting reference for region exceeding the end of the file by one "
                "cluster or more: offset 0x%" PRIx64 " size 0x%" PRIx64,
                off, len));
      return;
    }
    const uint64_t last = (off + len - 1) >> cluster_bits;
    if (last >= refs.size()) refs.resize(last + 1, 0);  // at most one more
    for (uint64_t c = off >> cluster_bits; c <= last; ++c) ++refs[c];
  }
  bool Aligned(uint64_t off, const char* what) {
    if (!(off & (cs - 1))) return true;
    Error(Fmt("ERROR %s offset=%" PRIx64 ": not aligned to a cluster", what, off));
    return false;
  }
  void TrimMessages() {
    if (r->messages.size() <= kMaxMessages) return;
    dropped_messages += r->messages.size() - kMaxMessages;
    r->messages.resize(kMaxMessages);
  }
};

Status Qcow2Image::CheckPassLocked(RepairMode fix, CheckResult* r, std::vector<uint64_t>* plain_refs, bool* rebuild) {
  *r = CheckResult{};
  IMGFS_ASSIGN_OR_RETURN(const uint64_t bad_entries, BadRefTableEntriesLocked(r));
  r->corruptions += bad_entries;
  if (rebuild) *rebuild = bad_entries > 0;
  IMGFS_RETURN_IF_ERROR(LoadRefTableLocked(/*lenient=*/true));
  CheckPass p;
  p.fix = fix;
  p.r = r;
  p.cs = cluster_size_;
  p.cluster_bits = cluster_bits_;
  p.file_size = file_->Size();
  p.file_clusters = (p.file_size + p.cs - 1) >> cluster_bits_;
  p.refs.assign(p.file_clusters, 0);
  p.table.resize(p.cs);

  p.Ref(0, p.cs);  // the header
  // The LUKS header's clusters: referenced by the header extension alone.
  if (header_.crypt_method == 2 && header_.has_crypto_ext) p.Ref(header_.crypto_offset, header_.crypto_length);
  IMGFS_RETURN_IF_ERROR(CheckHeaderLocked(p));
  IMGFS_RETURN_IF_ERROR(CountBitmapRefsLocked(p));
  if (l1_.size()) p.Ref(header_.l1_table_offset, l1_.size() * 8);
  IMGFS_RETURN_IF_ERROR(WalkL1Locked(p, l1_, true));
  IMGFS_RETURN_IF_ERROR(CountSnapshotRefsLocked(p));
  p.TrimMessages();
  if (p.dropped_messages)
    r->messages.push_back(Fmt("(%" PRIu64 " more messages like these left out)", p.dropped_messages));
  r->total_clusters = (header_.size + p.cs - 1) >> cluster_bits_;
  // COPIED is reported after the refcount lines, as qemu-img orders them.
  std::vector<std::string> copied_messages;
  IMGFS_RETURN_IF_ERROR(CheckCopiedLocked(p, &copied_messages));
  // The refcount structures last, so that what a rebuild needs is at hand.
  if (plain_refs) *plain_refs = p.refs;
  CountRefcountStructuresLocked(p, rebuild);
  IMGFS_RETURN_IF_ERROR(CompareRefcountsLocked(p));
  r->messages.insert(r->messages.end(), copied_messages.begin(), copied_messages.end());
  if (fix == RepairMode::kAll) IMGFS_RETURN_IF_ERROR(FixCopiedFlagsLocked());
  return Status::OK();
}

// What makes qemu refuse the image (or its check) outright, and what it
// reports of the header's fields.
Status Qcow2Image::CheckHeaderLocked(CheckPass& p) {
  CheckResult* r = p.r;
  if (header_.snapshots_offset & (p.cs - 1)) {
    p.Error("ERROR snapshot table offset invalid");
    r->failed = "Invalid argument";
  }
  if (std::string bad = BitmapsProblem(); !bad.empty()) {  // qemu cannot open it: its check fails
    p.Error("ERROR " + bad + " (not repaired: qemu cannot open the image)");
    r->failed = "Invalid argument";
  }
  // Version 3 snapshots carry their VM state and disk sizes (16 bytes of
  // extra data at least); Check(kAll) completes them first.
  for (size_t i = 0; header_.version >= 3 && i < snapshots_.size(); ++i)
    if (snapshots_[i].extra_len < 16) p.Error(Fmt("ERROR snapshot table entry %zu is incomplete", i));
  if (!(header_.autoclear_features & kAutoclearDataFileRaw) || data_file_) return Status::OK();
  if (!p.repair_all()) {
    p.Error("ERROR data-file-raw requires a data file");
    r->failed = "data-file-raw requires a data file (check -r all clears the bit)";  // qemu cannot open it
    return Status::OK();
  }
  header_.autoclear_features &= ~kAutoclearDataFileRaw;
  IMGFS_RETURN_IF_ERROR(WriteHeaderWordLocked(88, header_.autoclear_features));
  r->messages.push_back("Repairing the data-file-raw bit: cleared (the image has no data file)");
  ++r->corruptions_fixed;
  return Status::OK();
}

// Bitmaps: directory, each bitmap's table, and the table's data clusters;
// only while the extension is marked consistent (else, as for qemu, what
// they hold is leaked).
Status Qcow2Image::CountBitmapRefsLocked(CheckPass& p) {
  if (!header_.has_bitmaps_ext || !(header_.autoclear_features & kAutoclearBitmaps) ||
      !header_.bitmap_directory_size || header_.bitmap_directory_size >= (64u << 20))
    return Status::OK();
  p.Ref(header_.bitmap_directory_offset, header_.bitmap_directory_size);
  std::vector<uint8_t> dir(header_.bitmap_directory_size);
  IMGFS_RETURN_IF_ERROR(file_->PRead(header_.bitmap_directory_offset, dir.data(), dir.size()));
  for (const BitmapDirEntry& e : ParseBitmapDirectory(dir, header_.nb_bitmaps)) {
    const uint64_t tbl = e.table_offset;
    const uint32_t n = e.table_size;
    if (!n || !p.Aligned(tbl, "bitmap table")) continue;
    p.Ref(tbl, uint64_t(n) * 8);
    // One past the end was counted as damage just above; reading it
    // would allocate up to 32 GiB (table_size is 32 bits) for zeros.
    if (!WithinFile(tbl, uint64_t(n) * 8)) continue;
    std::vector<uint8_t> t(uint64_t(n) * 8);
    IMGFS_RETURN_IF_ERROR(file_->PRead(tbl, t.data(), t.size()));
    for (uint32_t i = 0; i < n; ++i) {
      const uint64_t d = LoadBE64(&t[i * 8]) & kOffsetMask;
      if (d && p.Aligned(d, "bitmap data")) p.Ref(d, p.cs);
    }
  }
  return Status::OK();
}

// One L1 walk: the active table (with fragmentation counts and COPIED
// checks), or a snapshot's.
Status Qcow2Image::WalkL1Locked(CheckPass& p, const std::vector<uint64_t>& l1, bool active) {
  for (uint64_t i = 0; i < l1.size(); ++i) {
    p.TrimMessages();
    if (active && op_progress_ && *op_progress_)  // in guest bytes, as the other subcommands count
      (*op_progress_)(std::min(header_.size, (i + 1) * (l2_entries_ << cluster_bits_)), header_.size);
    const uint64_t l2 = CheckL1EntryLocked(p, l1, i, active);
    if (!l2) continue;
    p.Ref(l2, p.cs);
    if (active) p.copied.push_back({true, i, l1[i], l2 >> cluster_bits_});
    const bool first_visit = !active || p.active_seen.insert(l2).second;
    IMGFS_RETURN_IF_ERROR(first_visit ? WalkL2Locked(p, l2, active) : RecountL2Locked(p, l2));
  }
  return Status::OK();
}

uint64_t Qcow2Image::CheckL1EntryLocked(CheckPass& p, const std::vector<uint64_t>& l1, uint64_t i, bool active) {
  const bool repair = active && p.repair_all();
  if (l1[i] & kL1Reserved) {
    if (repair) {
      p.r->messages.push_back(Fmt("Repairing L1 entry %" PRIu64 ": reserved bits cleared", i));
      l1_[i] &= ~kL1Reserved;
      // Nothing left but COPIED: qemu's check would take cluster 0 for a table.
      if (!(l1_[i] & kOffsetMask)) l1_[i] = 0;
      l1_dirty_ = true;
      ++p.r->corruptions_fixed;
    } else {
      p.Error(Fmt("ERROR found L1 entry with reserved bits set: %" PRIx64, l1[i]));
    }
  }
  const uint64_t l2 = l1[i] & kOffsetMask;
  if (!l2 || !p.Aligned(l2, "L2 table")) return 0;
  if (l2 < p.file_size) return l2;
  // qemu-img check: past by a cluster or more.
  if (!repair) {
    p.Error(Fmt("ERROR L2 table offset=%" PRIx64 " lies past the end of the file", l2));
    return 0;
  }
  // Nothing of it exists to read: the entry goes, and the range reads
  // from below (or as zeros) instead of failing.
  p.r->messages.push_back(Fmt("Repairing L1 entry %" PRIu64 ": L2 table offset=%" PRIx64
                              " lies past the end of the file; now unallocated",
                              i, l2));
  l1_[i] = 0;
  l1_dirty_ = true;
  ++p.r->corruptions_fixed;
  return 0;
}

// An L2 table met again: its references count again, nothing is checked twice.
Status Qcow2Image::RecountL2Locked(CheckPass& p, uint64_t l2) {
  IMGFS_RETURN_IF_ERROR(file_->PRead(l2, p.table.data(), p.cs));
  for (uint64_t j = 0; j < l2_entries_; ++j) {
    const uint64_t d = LoadBE64(&p.table[j * entry_bytes_]);
    if (d & kOflagCompressed) {
      const CompressedRange cr = DecodeCompressed(d, cluster_bits_);
      p.Ref(cr.host, cr.bytes);
    } else if (HasHost(d) && !data_file_ && !((d & kOffsetMask) & (p.cs - 1))) {
      p.Ref(d & kOffsetMask, p.cs);
    }
  }
  return Status::OK();
}

Status Qcow2Image::WalkL2Locked(CheckPass& p, uint64_t l2, bool active) {
  CheckResult* r = p.r;
  const bool repair = active && p.repair_all();
  IMGFS_RETURN_IF_ERROR(file_->PRead(l2, p.table.data(), p.cs));
  uint64_t next_contiguous = 0;  // fragmentation is counted within one L2 table
  for (uint64_t j = 0; j < l2_entries_; ++j) {
    IMGFS_RETURN_IF_ERROR(CheckEntryBitsLocked(p.table.data(), l2, j, repair, r));
    const uint64_t d = LoadBE64(&p.table[j * entry_bytes_]);
    if (d & kOflagCompressed) {
      const CompressedRange cr = DecodeCompressed(d, cluster_bits_);
      if (repair && ((cr.host + cr.bytes - 1) >> cluster_bits_) >= p.file_clusters) {
        // Nothing of it can be decoded: zeros instead of a read error.
        IMGFS_RETURN_IF_ERROR(GiveZeroedClusterLocked(p, l2, j, "compressed cluster", cr.host));
        continue;
      }
      p.Ref(cr.host, cr.bytes);
      if (!active) continue;
      ++r->allocated_clusters;
      ++r->compressed_clusters;
      ++r->fragmented_clusters;  // never contiguous with anything
      if (d & kOflagCopied) p.Error(Fmt("ERROR: compressed cluster with OFLAG_COPIED: l2_entry=%" PRIx64, d));
      continue;
    }
    const uint64_t host = d & kOffsetMask;
    if (!HasHost(d) || !p.Aligned(host, "data cluster")) continue;
    if (repair && !data_file_ && host >= p.file_clusters * p.cs) {
      // Past the end of the file the cluster reads as zeros: so it still
      // does, from a cluster of its own.
      IMGFS_RETURN_IF_ERROR(GiveZeroedClusterLocked(p, l2, j, "data cluster", host));
      continue;
    }
    if (!data_file_) p.Ref(host, p.cs);  // data-file clusters are not refcounted
    if (!active) continue;
    ++r->allocated_clusters;
    if (next_contiguous && host != next_contiguous) ++r->fragmented_clusters;
    next_contiguous = host + p.cs;
    if (!data_file_) p.copied.push_back({false, j, d, host >> cluster_bits_});
  }
  return Status::OK();
}

// Guest cluster j of table `l2`, whose bytes lie past the end of the
// file, gets a zeroed cluster of its own (-r all, active table only).
Status Qcow2Image::GiveZeroedClusterLocked(CheckPass& p, uint64_t l2, uint64_t j, const char* what, uint64_t host) {
  // Bounded: a hostile table could ask for gigabytes of zeroed clusters.
  if (++p.zeroed_given > CheckPass::kMaxZeroedClusters) {
    ++p.r->corruptions;
    return Status::OK();
  }
  IMGFS_ASSIGN_OR_RETURN(uint64_t fresh, AllocateClustersLocked(1));
  std::vector<uint8_t> zeros(p.cs, 0);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(fresh, zeros.data(), p.cs));
  IMGFS_ASSIGN_OR_RETURN(uint8_t * t, GetL2Locked(l2));
  StoreBE64(t + j * entry_bytes_, fresh | kOflagCopied);
  if (extended_l2_) StoreBE64(t + j * entry_bytes_ + 8, 0xffffffffull);
  l2_cache_.MarkDirty(l2);
  p.r->messages.push_back(Fmt("Repairing %s at offset 0x%" PRIx64
                              " past the end of the file: now a zeroed cluster at 0x%" PRIx64,
                              what, host, fresh));
  ++p.r->corruptions_fixed;
  ++p.r->allocated_clusters;
  return Status::OK();
}

Status Qcow2Image::CountSnapshotRefsLocked(CheckPass& p) {
  if (header_.nb_snapshots) p.Ref(header_.snapshots_offset, snapshot_table_bytes_);
  for (const auto& s : snapshots_) {
    // Only where the image was opened for a check alone (else it was refused).
    const char* bad = s.l1_table_offset & (p.cs - 1)             ? "L1 table is not cluster aligned"
                      : uint64_t(s.l1_size) * 8 > kMaxL1Bytes ? "L1 table is too large"
                                                                : nullptr;
    if (bad) {
      p.Error(Fmt("ERROR snapshot %s (%s) l1_offset=%#" PRIx64 ": %s; snapshot table entry corrupted",
                  s.info.id.c_str(), s.info.name.c_str(), s.l1_table_offset, bad));
      continue;
    }
    if (!s.l1_size) continue;
    p.Ref(s.l1_table_offset, uint64_t(s.l1_size) * 8);
    IMGFS_ASSIGN_OR_RETURN(auto l1, ReadL1Locked(s.l1_table_offset, s.l1_size));
    IMGFS_RETURN_IF_ERROR(WalkL1Locked(p, l1, false));
  }
  return Status::OK();
}

// COPIED must say "refcount is 1" exactly, with the refcounts as stored.
Status Qcow2Image::CheckCopiedLocked(CheckPass& p, std::vector<std::string>* messages) {
  const bool repair = p.repair_all();
  for (const auto& c : p.copied) {
    IMGFS_ASSIGN_OR_RETURN(uint64_t rc, RefcountLocked(c.cluster));
    if ((rc == 1) == ((c.entry & kOflagCopied) != 0)) continue;
    messages->push_back(c.is_l1 ? Fmt("%s OFLAG_COPIED L2 cluster: l1_index=%" PRIu64 " l1_entry=%" PRIx64
                                      " refcount=%" PRIu64,
                                      repair ? "Repairing" : "ERROR", c.index, c.entry, rc)
                                : Fmt("%s OFLAG_COPIED data cluster: l2_entry=%" PRIx64 " refcount=%" PRIu64,
                                      repair ? "Repairing" : "ERROR", c.entry, rc));
    if (repair) ++p.r->corruptions_fixed;
    else ++p.r->corruptions;
  }
  return Status::OK();
}

void Qcow2Image::CountRefcountStructuresLocked(CheckPass& p, bool* rebuild) {
  p.Ref(header_.refcount_table_offset, uint64_t(header_.refcount_table_clusters) << cluster_bits_);
  for (uint64_t b : reftable_)
    if (b && p.Aligned(b, "refcount block")) p.Ref(b, p.cs);
  for (size_t i = 0; i < reftable_.size(); ++i) {
    const uint64_t b = reftable_[i] >> cluster_bits_;
    if (!reftable_[i] || b >= p.refs.size() || p.refs[b] <= 1) continue;
    p.Error(Fmt("ERROR refcount block %zu refcount=%" PRIu64 " (it overlaps other data)", i, p.refs[b]));
    if (rebuild) *rebuild = true;
  }
}

// Stored refcounts against the references found.
Status Qcow2Image::CompareRefcountsLocked(CheckPass& p) {
  CheckResult* r = p.r;
  uint64_t highest = 0;
  bool any = false;
  for (uint64_t c = 0; c < p.refs.size(); ++c) {
    IMGFS_ASSIGN_OR_RETURN(uint64_t rc, RefcountLocked(c));
    const uint64_t want = p.refs[c];
    if (rc || want) {
      highest = c;
      any = true;
    }
    if (rc == want) continue;
    const bool leak = rc > want;
    const bool repair = leak ? p.fix != RepairMode::kNone : p.repair_all();
    r->messages.push_back(Fmt("%s cluster %" PRIu64 " refcount=%" PRIu64 " reference=%" PRIu64,
                              repair ? "Repairing" : leak ? "Leaked" : "ERROR", c, rc, want));
    if (repair) IMGFS_RETURN_IF_ERROR(SetRefLocked(c, want));
    uint64_t& count = leak ? (repair ? r->leaks_fixed : r->leaks) : (repair ? r->corruptions_fixed : r->corruptions);
    ++count;
  }
  // The end as it is now: a repair above may have allocated past the old one.
  IMGFS_RETURN_IF_ERROR(LeaksPastEndLocked(
      std::max<uint64_t>(p.refs.size(), (file_->Size() + p.cs - 1) >> cluster_bits_), p.fix, r));
  r->image_end_offset = any ? (highest + 1) << cluster_bits_ : 0;
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
      IMGFS_RETURN_IF_ERROR(SetRefLocked(c, 0));
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
