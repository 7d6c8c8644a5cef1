// qcow2 writing: in-place writes to owned clusters, and allocating writes
// with copy-on-write of the parts of a cluster the guest did not write.
#include <algorithm>
#include <cstring>
#include <memory>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/log.h"
#include "imagecore/mutex.h"

namespace imgfs::qcow2 {

Status Qcow2Image::WriteHeaderWordLocked(uint64_t offset, uint64_t value) {
  uint8_t raw[8];
  StoreBE64(raw, value);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(offset, raw, sizeof raw));
  return file_->Sync();
}

Status Qcow2Image::BeginRefcountWindowLocked() {
  if (header_.version < 3 || (header_.incompatible_features & kIncompatDirty)) return Status::OK();
  header_.incompatible_features |= kIncompatDirty;
  window_dirty_ = true;
  return WriteHeaderWordLocked(72, header_.incompatible_features);
}

Status Qcow2Image::EndRefcountWindowLocked(Status st) {
  if (!window_dirty_ || !st.ok()) return st;
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(true));
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  header_.incompatible_features &= ~kIncompatDirty;
  window_dirty_ = false;
  return WriteHeaderWordLocked(72, header_.incompatible_features);
}

Status Qcow2Image::PrepareForWriteLocked() {
  if (damaged_.load()) {
    // As qemu: the corrupt bit makes the next user check before writing.
    // The header write is the only one a damaged image still gets.
    if (!corrupt_bit_written_ && header_.version >= 3 && file_->writable()) {
      corrupt_bit_written_ = true;
      header_.incompatible_features |= kIncompatCorrupt;
      Status st = WriteHeaderWordLocked(72, header_.incompatible_features);
      if (!st.ok()) Log(LogLevel::kError, file_->path() + ": could not set the corrupt bit: " + st.message());
    }
    return ReadOnly(file_->path() + ": " + DamageFound());
  }
  if (write_prepared_) return Status::OK();
  // Autoclear bits name features whose data we would not keep in step
  // (e.g. dirty bitmaps); the spec asks a writer that does not update them
  // to clear the bits before the first write.
  // Kept: raw external data, which these writes keep true (every guest byte
  // is written at its own offset in the data file).
  uint64_t keep = data_file_ ? kAutoclearDataFileRaw : 0;
  // Dirty bitmaps stay valid metadata: the ones that track writes ("auto")
  // are loaded to be kept in step, and marked in_use on disk before the
  // first byte is written until a clean close stores them; disabled ones
  // are not affected.
  if (header_.has_bitmaps_ext && (header_.autoclear_features & kAutoclearBitmaps)) {
    IMGFS_RETURN_IF_ERROR(LoadTrackedBitmapsLocked());
    IMGFS_RETURN_IF_ERROR(MarkBitmapsInUseLocked(false));
    keep |= kAutoclearBitmaps;
  }
  if (header_.version >= 3 && (header_.autoclear_features & ~keep)) {
    header_.autoclear_features &= keep;
    IMGFS_RETURN_IF_ERROR(WriteHeaderWordLocked(88, header_.autoclear_features));
  }
  write_prepared_ = true;
  return Status::OK();
}

// all: every bitmap, for a change of the disk size. A bitmap keeps the size
// it was saved with, and qemu refuses to open an image with a bitmap whose
// size disagrees with the disk unless it is in_use, which the spec defines
// as "size or contents may be outdated". The ones held in memory are stored
// at their new size at close; the others stay in_use.
Status Qcow2Image::MarkBitmapsInUseLocked(bool all) {
  IMGFS_ASSIGN_OR_RETURN(auto dir, ReadBitmapDirectory());
  bool changed = false;
  for (const BitmapDirEntry& e : ParseBitmapDirectory(dir, header_.nb_bitmaps)) {
    if ((all || (e.flags & kBitmapAuto)) && !(e.flags & kBitmapInUse)) {
      uint8_t raw[4];
      StoreBE32(raw, e.flags | kBitmapInUse);
      IMGFS_RETURN_IF_ERROR(file_->PWrite(header_.bitmap_directory_offset + e.pos + 12, raw, sizeof raw));
      changed = true;
    }
  }
  if (changed) IMGFS_RETURN_IF_ERROR(file_->Sync());
  return Status::OK();
}

Result<uint64_t> Qcow2Image::L2OffsetForWriteLocked(uint64_t c) {
  const uint64_t l1_index = c / l2_entries_;
  if (l1_index >= l1_.size()) return Corrupt(file_->path() + ": write past the L1 table");
  const uint64_t e = l1_[l1_index];
  if (e & kOffsetMask) {
    if (!(e & kOflagCopied)) return CowL2TableLocked(l1_index);
    // The table is about to change: refuse now if it is not only an L2 table.
    IMGFS_RETURN_IF_ERROR(CheckOverlapLocked(e & kOffsetMask, cluster_size_, kMetaL2, "an L2 table"));
    return e & kOffsetMask;
  }
  // A new L2 table: its refcount is set now, its content reaches the disk
  // at write-back before the L1 entry that points at it.
  IMGFS_ASSIGN_OR_RETURN(uint64_t off, AllocateClustersLocked(1));
  overlap_.Add(off >> cluster_bits_, 1, kMetaL2);
  IMGFS_RETURN_IF_ERROR(l2_cache_.Create(off, [&] {
        meta_mu_.AssertHeld();  // a cache callback, under it
        return FlushMetadataLocked(false);
      }).status());
  l1_[l1_index] = off | kOflagCopied;
  l1_dirty_ = true;
  return off;
}

// The L2 table at l1_[l1_index] is shared with a snapshot: give the active
// L1 its own copy. Refcounts count references per L1 table walk, so the
// clusters the table names keep theirs (the snapshot's walk now goes through
// the old table, the active one through the copy); only the tables' own
// counts move. Order: the copy and its refcount reach the disk before the
// L1 entry; the old table's refcount drops after it (a pending release), so
// a crash leaves at most a leak.
Result<uint64_t> Qcow2Image::CowL2TableLocked(uint64_t l1_index) {
  const uint64_t old = l1_[l1_index] & kOffsetMask;
  std::vector<uint8_t> copy(cluster_size_);
  {
    IMGFS_ASSIGN_OR_RETURN(uint8_t * src, GetL2Locked(old));
    std::memcpy(copy.data(), src, cluster_size_);
  }
  // Every cluster named here is also the snapshot's: writes must copy it.
  for (uint64_t j = 0; j < l2_entries_; ++j) {
    const uint64_t e = LoadBE64(&copy[j * entry_bytes_]);
    if (e & kOflagCopied) StoreBE64(&copy[j * entry_bytes_], e & ~kOflagCopied);
  }
  IMGFS_ASSIGN_OR_RETURN(uint64_t fresh, AllocateClustersLocked(1));
  overlap_.Add(fresh >> cluster_bits_, 1, kMetaL2);
  IMGFS_ASSIGN_OR_RETURN(uint8_t * dst, l2_cache_.Create(fresh, [&] {
        meta_mu_.AssertHeld();  // a cache callback, under it
        return FlushMetadataLocked(false);
      }));
  std::memcpy(dst, copy.data(), cluster_size_);
  l1_[l1_index] = fresh | kOflagCopied;
  l1_dirty_ = true;
  pending_release_.emplace_back(old, cluster_size_);
  return fresh;
}

// Fills `out` with bytes [from, to) of guest cluster `c` as they read before
// this write. REQUIRES: meta_mu_.
Status Qcow2Image::CowSourceLocked(uint64_t c, uint64_t entry, uint64_t bitmap, uint64_t from, uint64_t to,
                                   uint8_t* out, const LayerReader* below) {
  if (from >= to) return Status::OK();
  const uint64_t base = c << cluster_bits_;
  const uint64_t n = to - from;
  if (extended_l2_ && !(entry & kOflagCompressed)) {
    // Subcluster by subcluster: its own bytes, zeros, or the backing file.
    const uint32_t sc_bits = cluster_bits_ - 5;
    for (uint64_t pos = from; pos < to;) {
      const uint32_t sub = uint32_t((pos - base) >> sc_bits);
      const uint64_t end = std::min(to, base + (uint64_t(sub + 1) << sc_bits));
      uint8_t* dst = out + (pos - from);
      if ((bitmap >> sub) & 1) {
        IMGFS_RETURN_IF_ERROR(data().PRead((entry & kOffsetMask) + (pos - base), dst, end - pos));
      } else if (((bitmap >> (32 + sub)) & 1) || !below) {
        std::memset(dst, 0, end - pos);
      } else {
        IMGFS_RETURN_IF_ERROR(below->Read(pos, dst, end - pos));
      }
      pos = end;
    }
    return Status::OK();
  }
  if (entry & kOflagCompressed) {
    std::vector<uint8_t> cl(cluster_size_);
    IMGFS_RETURN_IF_ERROR(ReadCompressedCluster(entry, cl.data()));
    std::memcpy(out, cl.data() + (from - base), n);
  } else if (header_.version >= 3 && (entry & kOflagZero)) {
    std::memset(out, 0, n);
  } else if (HasHost(entry)) {
    IMGFS_RETURN_IF_ERROR(ReadData((entry & kOffsetMask) + (from - base), from, out, n));
  } else if (below) {
    IMGFS_RETURN_IF_ERROR(below->Read(from, out, n));
  } else {
    std::memset(out, 0, n);
  }
  return Status::OK();
}

// Whether bytes [from, to) of guest cluster `c` read as zeros before this
// write, as the entry alone tells (a backing file's bytes count as data).
bool Qcow2Image::CowReadsZero(uint64_t c, uint64_t entry, uint64_t bitmap, uint64_t from, uint64_t to,
                              const LayerReader* below) const {
  if (from >= to) return true;
  if (entry & kOflagCompressed) return false;
  if (extended_l2_) {
    const uint32_t sc_bits = cluster_bits_ - 5;
    const uint64_t base = c << cluster_bits_;
    for (uint64_t sub = (from - base) >> sc_bits; sub <= (to - 1 - base) >> sc_bits; ++sub)
      if (((bitmap >> sub) & 1) || (below && !((bitmap >> (32 + sub)) & 1))) return false;
    return true;
  }
  if (header_.version >= 3 && (entry & kOflagZero)) return true;
  return !HasHost(entry) && !below;
}

namespace {
constexpr uint64_t kWritebackHint = 256 << 10;

constexpr uint64_t kAllSubclustersAllocated = 0xffffffffull;
}  // namespace

// A cluster this layer owns outright, every subcluster of it, so that it
// can be overwritten in place.
bool Qcow2Image::InPlace(uint64_t e, uint64_t bitmap) const {
  if (!(e & kOflagCopied) || (e & kOflagCompressed) || !HasHost(e)) return false;
  if (extended_l2_) return (bitmap & kAllSubclustersAllocated) == kAllSubclustersAllocated;
  return !(header_.version >= 3 && (e & kOflagZero));
}

Status Qcow2Image::AllocatingWriteLocked(uint64_t off, const uint8_t* buf, uint64_t* len,
                                         const LayerReader* below, uint64_t* host_written, uint64_t* host_len) {
  const uint64_t c0 = off >> cluster_bits_;
  const uint64_t table_last = (c0 / l2_entries_ + 1) * l2_entries_ - 1;
  // Bound the buffer of one run to 16 MiB (at least one cluster).
  const uint64_t max_run = std::max<uint64_t>(1, (16ull << 20) >> cluster_bits_);
  uint64_t want_last = std::min({(off + *len - 1) >> cluster_bits_, table_last, c0 + max_run - 1});
  // With subclusters, a partly written last cluster is left to
  // SubclusterWriteLocked (c0 itself is whole here, or not subcluster-writable).
  if (extended_l2_ && want_last > c0 && want_last == (off + *len - 1) >> cluster_bits_ &&
      ((off + *len) & (cluster_size_ - 1)))
    --want_last;
  IMGFS_ASSIGN_OR_RETURN(uint64_t l2_off, L2OffsetForWriteLocked(c0));

  // Count the clusters from c0 that need a new host cluster; remember the
  // old entries (the run is limited to one L2 table).
  std::vector<uint64_t> old, old_bitmap;
  {
    IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(l2_off));
    for (uint64_t c = c0; c <= want_last; ++c) {
      const uint8_t* slot = l2 + (c % l2_entries_) * entry_bytes_;
      const uint64_t e = LoadBE64(slot), bitmap = extended_l2_ ? LoadBE64(slot + 8) : 0;
      if (c != c0 && (InPlace(e, bitmap) || (SubclusterWritable(e) && HasHost(e)))) break;
      old.push_back(e);
      old_bitmap.push_back(bitmap);
    }
  }
  // With an external data file a guest cluster's place is its guest offset.
  // Else the clusters are the lowest free run (reused space), which may be
  // shorter than the write: the rest goes in the next round.
  uint64_t host = c0 << cluster_bits_;
  uint64_t end_before = 0;  // clusters from here on were never written: holes
  if (!data_file_) {
    IMGFS_RETURN_IF_ERROR(FindEndLocked());
    end_before = end_cluster_;
    uint64_t got = 0;
    IMGFS_ASSIGN_OR_RETURN(host, AllocateRunLocked(old.size(), &got));
    old.resize(got);
    old_bitmap.resize(got);
  }
  const uint64_t n = old.size();

  const uint64_t run_start = c0 << cluster_bits_;
  const uint64_t run_end = (c0 + n) << cluster_bits_;
  const uint64_t wlen = std::min(*len, run_end - off);
  // Head and tail of the run keep what they read before (copy-on-write);
  // the guest's bytes go out from its own buffer.
  const uint64_t head = off - run_start, tail = run_end - (off + wlen);
  *host_written = host;
  *host_len = run_end - run_start;
  // (Not encrypted: a hole would decrypt to noise.)
  if (!data_file_ && !encrypted() && (host >> cluster_bits_) >= end_before &&
      CowReadsZero(c0, old.front(), old_bitmap.front(), run_start, off, below) &&
      CowReadsZero(c0 + n - 1, old.back(), old_bitmap.back(), off + wlen, run_end, below)) {
    // New clusters past the end, around bytes that read as zeros: only the
    // guest's bytes are written; the rest stays a hole. The file covers
    // the whole run (a read splices every byte of a cluster).
    IMGFS_RETURN_IF_ERROR(data().PWrite(host + head, buf, wlen));
    if (data().Size() < host + *host_len) IMGFS_RETURN_IF_ERROR(data().Truncate(host + *host_len));
    return MapNewRunLocked(l2_off, c0, host, old, wlen, len);
  }
  std::unique_ptr<uint8_t[]> head_buf(head ? new uint8_t[head] : nullptr);
  std::unique_ptr<uint8_t[]> tail_buf(tail ? new uint8_t[tail] : nullptr);
  IMGFS_RETURN_IF_ERROR(CowSourceLocked(c0, old.front(), old_bitmap.front(), run_start, off, head_buf.get(), below));
  IMGFS_RETURN_IF_ERROR(
      CowSourceLocked(c0 + n - 1, old.back(), old_bitmap.back(), off + wlen, run_end, tail_buf.get(), below));
  const io::File::Piece pieces[3] = {{head_buf.get(), head}, {buf, wlen}, {tail_buf.get(), tail}};
  // Invariant: guest data is in the file before the L2 entry names it.
  IMGFS_RETURN_IF_ERROR(WriteDataPieces(host, run_start, pieces, 3));
  return MapNewRunLocked(l2_off, c0, host, old, wlen, len);
}

// Points the L2 entries of clusters c0... at the run written at `host`;
// the clusters they named before are released at the next write-back.
Status Qcow2Image::MapNewRunLocked(uint64_t l2_off, uint64_t c0, uint64_t host, const std::vector<uint64_t>& old,
                                   uint64_t wlen, uint64_t* len) {
  const uint64_t n = old.size();
  IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(l2_off));
  for (uint64_t i = 0; i < n; ++i) {
    uint8_t* slot = l2 + ((c0 + i) % l2_entries_) * entry_bytes_;
    StoreBE64(slot, (host + (i << cluster_bits_)) | kOflagCopied);
    if (extended_l2_) StoreBE64(slot + 8, kAllSubclustersAllocated);  // every subcluster written now
    const uint64_t e = old[i];
    if (data_file_) continue;  // data clusters there are not refcounted
    if (e & kOflagCompressed) {
      const CompressedRange cr = DecodeCompressed(e, cluster_bits_);
      pending_release_.emplace_back(cr.host, std::min(cr.bytes, 2 * cluster_size_));
    } else if (e & kOffsetMask) {
      pending_release_.emplace_back(e & kOffsetMask, cluster_size_);
    }
  }
  l2_cache_.MarkDirty(l2_off);
  *len = wlen;
  return Status::OK();
}

Status Qcow2Image::Write(uint64_t off, const void* buf, size_t len, const LayerReader* below) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  if (off > header_.size || len > header_.size - off)
    return NoSpace(file_->path() + ": write past the end of the disk");
  if (encrypted()) IMGFS_RETURN_IF_ERROR(Cipher().status());
  const auto* p = static_cast<const uint8_t*>(buf);
  while (len > 0) {
    uint64_t host = 0, n = 0, new_host = 0, new_len = 0;
    bool in_place = false;
    {
      MutexLock l(meta_mu_);
      IMGFS_RETURN_IF_ERROR(PrepareForWriteLocked());
      if (p == buf) MarkDirtyLocked(off, len);  // all of it, before any byte changes
      // Longest run of clusters owned in place with contiguous host offsets.
      uint64_t c = off >> cluster_bits_;
      const uint64_t in = off & (cluster_size_ - 1);
      IMGFS_ASSIGN_OR_RETURN(auto slot, L2SlotLocked(c));
      const uint64_t e = slot.first;
      if (InPlace(e, slot.second)) {
        in_place = true;
        if (!data_file_) IMGFS_RETURN_IF_ERROR(CheckWithinFile(e & kOffsetMask, cluster_size_, "data cluster"));
        host = (e & kOffsetMask) + in;
        n = std::min<uint64_t>(len, cluster_size_ - in);
        uint64_t expect = (e & kOffsetMask) + cluster_size_;
        while (n < len && (c + 1) % l2_entries_ != 0) {
          IMGFS_ASSIGN_OR_RETURN(auto slot2, L2SlotLocked(c + 1));
          if (!InPlace(slot2.first, slot2.second) || (slot2.first & kOffsetMask) != expect) break;
          if (!data_file_) IMGFS_RETURN_IF_ERROR(CheckWithinFile(expect, cluster_size_, "data cluster"));
          ++c;
          expect += cluster_size_;
          n = std::min<uint64_t>(len, n + cluster_size_);
        }
        if (!data_file_) IMGFS_RETURN_IF_ERROR(CheckOverlapLocked(host, n, 0, "guest data"));
      } else if (SubclusterWritable(e) && (HasHost(e) || in || len < cluster_size_)) {
        n = std::min<uint64_t>(len, cluster_size_ - in);
        IMGFS_RETURN_IF_ERROR(SubclusterWriteLocked(off, p, n, below));
      } else {
        n = len;
        IMGFS_RETURN_IF_ERROR(AllocatingWriteLocked(off, p, &n, below, &new_host, &new_len));
      }
    }
    // Streams of new data (a copy onto the disk, a guest filling it) are
    // synced soon: start writeback now, outside the lock, so the fsync at
    // the end overlaps with the copy instead of following it.
    if (new_len >= kWritebackHint) data().StartWriteback(new_host, new_len);
    if (in_place) {
      IMGFS_RETURN_IF_ERROR(WriteData(host, off, p, n));
      if (n >= kWritebackHint) data().StartWriteback(host, n);
    }
    p += n;
    off += n;
    len -= n;
  }
  return Status::OK();
}

}  // namespace imgfs::qcow2
