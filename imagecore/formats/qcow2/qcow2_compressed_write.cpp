// qcow2 compressed clusters written (convert -c): the compressor, and the
// packing of compressed bytes into host clusters.
#include <algorithm>

#include "base/compress.h"
#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/mutex.h"

namespace imgfs::qcow2 {

Result<size_t> Qcow2Image::Compress(const uint8_t* in, size_t len, uint8_t* out, size_t cap) const {
  return header_.compression_type == 1 ? ZstdCompress(in, len, out, cap) : DeflateRaw4K(in, len, out, cap);
}

// The bytes go at the cursor, running on into the next cluster when the
// one allocated now follows the cursor's; otherwise at the start of the new
// one. len < cluster size, so one new cluster always holds them, and what is
// left past the cursor always lies in the cursor's own cluster. Each host
// cluster the bytes touch gains one reference: a new cluster's allocation is
// that reference, the cursor's cluster (holding earlier bytes) gains one.
Result<uint64_t> Qcow2Image::PlaceCompressedLocked(uint64_t len) {
  // Narrow refcounts (under 16 bits) could overflow when clusters share:
  // there each compressed cluster takes host clusters of its own.
  uint64_t at = header_.refcount_order >= 4 ? compressed_next_ : 0;
  if (!at || at + len > compressed_end_) {
    IMGFS_ASSIGN_OR_RETURN(uint64_t fresh, AllocateClustersLocked(1));
    if (!at || fresh != compressed_end_) at = fresh;
    compressed_end_ = fresh + cluster_size_;
  }
  if (at & (cluster_size_ - 1)) IMGFS_RETURN_IF_ERROR(AddRefLocked(at >> cluster_bits_, 1));
  compressed_next_ = at + len;
  if (compressed_next_ == compressed_end_) compressed_next_ = compressed_end_ = 0;
  return at;
}

Result<bool> Qcow2Image::WriteCompressed(uint64_t off, const uint8_t* data, size_t len) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  if (data_file_) return Unsupported(file_->path() + ": compressed clusters cannot go to an external data file");
  if (encrypted()) return Unsupported(file_->path() + ": an encrypted image cannot hold compressed clusters");
  if ((off & (cluster_size_ - 1)) || off >= header_.size)
    return InvalidArgument(file_->path() + ": a compressed write must start a cluster of the disk");
  if (len == 0 || len >= cluster_size_) return InvalidArgument(file_->path() + ": compressed cluster too long");
  const uint64_t c = off >> cluster_bits_;
  MutexLock l(meta_mu_);
  IMGFS_RETURN_IF_ERROR(PrepareForWriteLocked());
  IMGFS_ASSIGN_OR_RETURN(auto slot, L2SlotLocked(c));
  if (HasHost(slot.first) || (slot.first & kOflagCompressed)) return false;
  MarkDirtyLocked(off, std::min(cluster_size_, header_.size - off));
  IMGFS_ASSIGN_OR_RETURN(uint64_t l2_off, L2OffsetForWriteLocked(c));
  IMGFS_ASSIGN_OR_RETURN(uint64_t host, PlaceCompressedLocked(len));
  IMGFS_RETURN_IF_ERROR(CheckOverlapLocked(host, len, 0, "compressed data"));
  // Invariant: the bytes are in the file before the L2 entry names them.
  IMGFS_RETURN_IF_ERROR(file_->PWrite(host, data, len));
  const uint32_t x = 62 - (cluster_bits_ - 8);
  const uint64_t extra_sectors = ((host + len - 1) >> 9) - (host >> 9);
  IMGFS_ASSIGN_OR_RETURN(uint8_t * l2, GetL2Locked(l2_off));
  uint8_t* entry = l2 + (c % l2_entries_) * entry_bytes_;
  StoreBE64(entry, kOflagCompressed | (extra_sectors << x) | host);
  if (extended_l2_) StoreBE64(entry + 8, 0);  // no subcluster bits for compressed clusters
  l2_cache_.MarkDirty(l2_off);
  return true;
}

}  // namespace imgfs::qcow2
