// qcow2 reading: guest offset -> L1 -> L2 -> host cluster, block status,
// and compressed clusters.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "base/compress.h"
#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/log.h"
#include "imagecore/mutex.h"

namespace imgfs::qcow2 {

Status Qcow2Image::FoundDamage(const std::string& what) const {
  Status st = Corrupt(file_->path() + ": " + what);
  MutexLock l(damage_mu_);
  if (!damaged_.load()) {
    damage_ = what;
    damaged_.store(true);
    Log(LogLevel::kError, st.message() + "; the image is read-only from now on (run imgfs check -r all)");
  } else {
    Log(LogLevel::kError, st.message());
  }
  return st;
}

std::string Qcow2Image::DamageFound() const {
  if (!damaged_.load()) return "";
  MutexLock l(damage_mu_);
  return "metadata found damaged: " + damage_;
}

// qemu's test: the file spans clearly more clusters than the host stores
// (by a ninth, and by two at least), as after preallocation=metadata. qemu
// counts referenced clusters; up to the end of the file nearly all are.
bool Qcow2Image::MapShowsHostHoles() const {
  if (data_file_) return false;
  const uint64_t spanned = (file_->Size() + cluster_size_ - 1) / cluster_size_;
  const uint64_t stored = file_->AllocatedBytes() / cluster_size_;
  return spanned >= std::max(stored * 10 / 9, stored + 2);
}

Status Qcow2Image::CheckHostOffset(uint64_t host, const char* what) const {
  if (host & (cluster_size_ - 1)) {
    char buf[128];
    std::snprintf(buf, sizeof buf, "%s at 0x%llx is not cluster aligned", what,
                  static_cast<unsigned long long>(host));
    return FoundDamage(buf);
  }
  return Status::OK();
}

bool Qcow2Image::WithinFile(uint64_t host, uint64_t len) const {
  // As qemu-img check: a region ending a cluster or more past the end is not.
  const uint64_t limit = file_->Size() + cluster_size_;
  return host <= limit && len <= limit - host;
}

Status Qcow2Image::CheckWithinFile(uint64_t host, uint64_t len, const char* what) const {
  if (WithinFile(host, len)) return Status::OK();
  char buf[160];
  std::snprintf(buf, sizeof buf, "%s at 0x%llx lies past the end of the file", what,
                static_cast<unsigned long long>(host));
  return FoundDamage(buf);
}

Result<uint8_t*> Qcow2Image::GetL2Locked(uint64_t l2_offset) {
  IMGFS_RETURN_IF_ERROR(CheckHostOffset(l2_offset, "L2 table"));
  return l2_cache_.Get(
      l2_offset,
      [&](uint64_t off, uint8_t* buf) {
        // Tables made in this session are found in the cache; a table on
        // disk must lie inside the file.
        if (off + cluster_size_ > file_->Size()) return FoundDamage("L2 table offset lies past the end of the file");
        return file_->PRead(off, buf, cluster_size_);
      },
      [&] {
        meta_mu_.AssertHeld();  // a cache callback, under it
        return FlushMetadataLocked(false);
      });
}

Result<uint64_t> Qcow2Image::L2EntryLocked(uint64_t c) {
  const uint64_t l1_index = c / l2_entries_;
  if (l1_index >= l1_.size()) return uint64_t{0};
  const uint64_t l2_offset = l1_[l1_index] & kOffsetMask;
  if (!l2_offset) return uint64_t{0};
  IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(l2_offset));
  return LoadBE64(l2 + (c % l2_entries_) * entry_bytes_);
}

Result<std::pair<uint64_t, uint64_t>> Qcow2Image::L2SlotLocked(uint64_t c) {
  const uint64_t l1_index = c / l2_entries_;
  if (l1_index >= l1_.size()) return std::make_pair(uint64_t{0}, uint64_t{0});
  const uint64_t l2_offset = l1_[l1_index] & kOffsetMask;
  if (!l2_offset) return std::make_pair(uint64_t{0}, uint64_t{0});
  IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(l2_offset));
  const uint8_t* slot = l2 + (c % l2_entries_) * entry_bytes_;
  return std::make_pair(LoadBE64(slot), extended_l2_ ? LoadBE64(slot + 8) : uint64_t{0});
}

namespace {
// A host offset, or kNoHost (0 is a real place in an external data file).
constexpr uint64_t kNoHost = ~uint64_t{0};
struct Mapping {
  ExtentKind kind;
  uint64_t host;  // kData (and kZero that keeps its cluster): host offset of the cluster, else kNoHost
};

// Whether a cluster mapped at `next` continues a run that began at `first`,
// `delta` bytes before it: both unmapped, or the host bytes contiguous.
bool Follows(uint64_t first, uint64_t next, uint64_t delta) {
  return first == kNoHost ? next == kNoHost : next == first + delta;
}
}  // namespace

Status Qcow2Image::BlockStatus(uint64_t off, uint64_t len, Extent* out) {
  if (off >= header_.size || len == 0) return InvalidArgument("block status out of range");
  len = std::min(len, header_.size - off);
  const uint64_t c = off >> cluster_bits_;
  const uint64_t table_end = ((c / l2_entries_) + 1) * l2_entries_;  // first cluster of next L2 table
  const uint64_t limit = std::min(off + len, table_end << cluster_bits_);

  MutexLock l(meta_mu_);
  const uint64_t l1_index = c / l2_entries_;
  const uint64_t l2_offset = l1_index < l1_.size() ? (l1_[l1_index] & kOffsetMask) : 0;
  if (!l2_offset) {
    // Whole L2 tables absent: skip all of them in one answer (a sparse
    // image with small clusters has millions).
    uint64_t next = l1_index + 1;
    const uint64_t want_end = off + len;
    while (next < l1_.size() && !(l1_[next] & kOffsetMask) && ((next * l2_entries_) << cluster_bits_) < want_end)
      ++next;
    const uint64_t end = std::min(want_end, (next * l2_entries_) << cluster_bits_);
    *out = Extent{ExtentKind::kUnallocated, end - off, nullptr, 0};
    return Status::OK();
  }
  IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(l2_offset));
  if (extended_l2_) return ExtendedStatus(l2, off, limit, out);
  const bool v3 = header_.version >= 3;
  auto classify = [&](uint64_t e) -> Mapping {
    if (e & kOflagCompressed) return {ExtentKind::kOpaque, kNoHost};
    if (v3 && (e & kOflagZero)) return {ExtentKind::kZero, HasHost(e) ? e & kOffsetMask : kNoHost};  // may keep its cluster
    if (!HasHost(e)) return {ExtentKind::kUnallocated, kNoHost};
    if (encrypted()) return {ExtentKind::kOpaque, kNoHost};  // only the cipher reads it
    return {ExtentKind::kData, e & kOffsetMask};
  };
  const uint64_t first = LoadBE64(l2 + (c % l2_entries_) * entry_bytes_);
  Mapping m = classify(first);
  if (m.kind == ExtentKind::kData) IMGFS_RETURN_IF_ERROR(CheckHostOffset(m.host, "data cluster"));
  uint64_t next = c + 1;
  while ((next << cluster_bits_) < limit) {
    Mapping n = classify(LoadBE64(l2 + (next % l2_entries_) * entry_bytes_));
    if (n.kind != m.kind || !Follows(m.host, n.host, (next - c) << cluster_bits_)) break;
    if (m.kind == ExtentKind::kOpaque) break;  // one compressed (or encrypted) cluster at a time
    ++next;
  }
  const uint64_t end = std::min(limit, next << cluster_bits_);
  out->kind = m.kind;
  out->length = end - off;
  out->file = m.host != kNoHost ? &data() : nullptr;
  out->host_offset = m.host != kNoHost ? m.host + (off & (cluster_size_ - 1)) : 0;
  return Status::OK();
}

// Extended L2 entries: 32 subclusters per cluster, each allocated (data at
// its place in the host cluster), reading as zeros, or unallocated.
Status Qcow2Image::ExtendedStatus(const uint8_t* l2, uint64_t off, uint64_t limit, Extent* out) {
  const uint32_t sc_bits = cluster_bits_ - 5;
  struct Sub {
    ExtentKind kind;
    uint64_t host;
    bool damaged = false;  // allocated, but no host cluster
  };
  auto classify = [&](uint64_t pos) -> Sub {
    const uint64_t c = pos >> cluster_bits_;
    const uint8_t* p = l2 + (c % l2_entries_) * 16;
    const uint64_t e = LoadBE64(p), bitmap = LoadBE64(p + 8);
    if (e & kOflagCompressed) return {ExtentKind::kOpaque, kNoHost};
    const uint32_t sub = uint32_t((pos >> sc_bits) & 31);
    if ((bitmap >> sub) & 1)
      return {ExtentKind::kData, (e & kOffsetMask) + (uint64_t(sub) << sc_bits), !HasHost(e)};
    if ((bitmap >> (32 + sub)) & 1)
      return {ExtentKind::kZero, HasHost(e) ? (e & kOffsetMask) + (uint64_t(sub) << sc_bits) : kNoHost};
    return {ExtentKind::kUnallocated, HasHost(e) ? (e & kOffsetMask) + (uint64_t(sub) << sc_bits) : kNoHost};
  };
  const uint64_t first_sub = off >> sc_bits;
  Sub m = classify(off);
  if (m.damaged) return FoundDamage("allocated subcluster without a host cluster");
  if (m.kind == ExtentKind::kData) IMGFS_RETURN_IF_ERROR(CheckHostOffset(m.host & ~(cluster_size_ - 1), "data cluster"));
  uint64_t next = first_sub + 1;
  if (m.kind == ExtentKind::kOpaque) {
    next = ((off >> cluster_bits_) + 1) << (cluster_bits_ - sc_bits);  // the whole cluster
  } else {
    while ((next << sc_bits) < limit) {
      Sub n = classify(next << sc_bits);
      if (n.kind != m.kind || !Follows(m.host, n.host, (next - first_sub) << sc_bits)) break;
      ++next;
    }
  }
  const uint64_t end = std::min(limit, next << sc_bits);
  out->kind = m.kind;
  out->length = end - off;
  out->file = m.host != kNoHost ? &data() : nullptr;
  out->host_offset = m.host != kNoHost ? m.host + (off & ((1ull << sc_bits) - 1)) : 0;
  return Status::OK();
}

Status Qcow2Image::ReadCompressedCluster(uint64_t entry, uint8_t* out) {
  const CompressedRange cr = DecodeCompressed(entry, cluster_bits_);
  const uint64_t host = cr.host, in_len = cr.bytes;
  if (host + in_len > file_->Size() + 512)
    return FoundDamage("compressed cluster lies past the end of the file");
  // Compressed clusters are read one small piece at a time; a sequential
  // reader soon wants what follows, so the host starts on it early. Only
  // when this piece follows the previous one closely: random reads would
  // pay for 4 MiB each.
  constexpr uint64_t kAhead = 4 << 20;
  const uint64_t end = host + in_len;
  const uint64_t last = last_compressed_end_.exchange(end, std::memory_order_relaxed);
  if (host >= last && host - last <= 2 * cluster_size_) {
    const uint64_t until = prefetched_until_.load(std::memory_order_relaxed);
    if (end + kAhead / 2 > until || end + 2 * kAhead < until) {
      prefetched_until_.store(end + kAhead, std::memory_order_relaxed);
      file_->WillNeed(end, kAhead);
    }
  }
  std::vector<uint8_t> in(in_len);
  IMGFS_RETURN_IF_ERROR(file_->PRead(host, in.data(), in_len));
  Status st = header_.compression_type == 1 ? ZstdDecompress(in.data(), in_len, out, cluster_size_)
                                            : InflateRaw(in.data(), in_len, out, cluster_size_);
  if (st.code() == Code::kCorrupt) return FoundDamage(st.message());
  return st.Prefixed(file_->path());
}

Status Qcow2Image::ReadOpaque(uint64_t off, void* buf, size_t len) {
  auto* p = static_cast<uint8_t*>(buf);
  std::vector<uint8_t> cluster;
  while (len > 0) {
    const uint64_t c = off >> cluster_bits_;
    const uint64_t in = off & (cluster_size_ - 1);
    const uint64_t n = std::min<uint64_t>(len, cluster_size_ - in);
    uint64_t entry;
    {
      MutexLock l(meta_mu_);
      IMGFS_ASSIGN_OR_RETURN(entry, L2EntryLocked(c));
    }
    if (entry & kOflagCompressed) {
      if (n == cluster_size_) {  // the whole cluster: decode in place
        IMGFS_RETURN_IF_ERROR(ReadCompressedCluster(entry, p));
      } else {
        cluster.resize(cluster_size_);
        IMGFS_RETURN_IF_ERROR(ReadCompressedCluster(entry, cluster.data()));
        std::memcpy(p, cluster.data() + in, n);
      }
    } else if ((header_.version >= 3 && (entry & kOflagZero)) || !HasHost(entry)) {
      // Zeroed or discarded meanwhile: a discard under a backing file
      // leaves zero clusters, and without one unallocated reads as zeros.
      std::memset(p, 0, n);
    } else {
      IMGFS_RETURN_IF_ERROR(ReadData((entry & kOffsetMask) + in, off, p, n));
    }
    p += n;
    off += n;
    len -= n;
  }
  return Status::OK();
}

}  // namespace imgfs::qcow2
