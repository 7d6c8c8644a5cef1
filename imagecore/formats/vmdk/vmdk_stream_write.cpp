// GrainExtent: writing a new streamOptimized extent, as convert does. The
// grain tables and directories lie before the first grain (created so);
// each grain is deflated (a zlib stream, as the format stores them) and
// appended after the last one with its marker (the grain's first sector
// and the compressed size), and its table entry points at the marker. At
// each flush the end-of-stream marker follows the last grain. A grain is
// written once, whole: a stream has no room to rewrite one in place.
#include <zlib.h>

#include <cerrno>
#include <cstring>

#include "base/endian.h"
#include "formats/vmdk/vmdk_grains.h"
#include "imagecore/mutex.h"

namespace imgfs::vmdk {

Result<bool> GrainExtent::BeginStream() {
  if (l_.flavor != Flavor::kHosted || !l_.compressed || !l_.markers) return false;
  MutexLock lock(mu_);
  if (!file_->writable()) return ReadOnly(file_->path() + ": opened read-only");
  if (damaged_.load() || next_free_ > (l_.overhead_bytes + 511) / 512 * 512 + 512)
    return Unsupported(file_->path() + ": only a new, empty streamOptimized extent takes writes");
  // Every table must exist already: a table made later would land among
  // the grains, where a reader that follows the markers does not look.
  for (uint64_t at : gd_)
    if (!at) return Unsupported(file_->path() + ": a streamOptimized extent without preallocated grain tables");
  next_free_ = l_.overhead_bytes;  // over any end-of-stream marker
  streaming_.store(true);
  return true;
}

Status GrainExtent::StreamWrite(uint64_t off, const uint8_t* buf, size_t len) {
  const uint64_t gb = l_.grain_bytes;
  while (len > 0) {
    const uint64_t g = off / gb;
    const size_t n = std::min<uint64_t>(len, gb);
    if (off % gb || (n < gb && off + n != bytes_))
      return Unsupported(file_->path() + ": a streamOptimized extent takes whole grains only");
    IMGFS_RETURN_IF_ERROR(AppendGrain(g, buf, n));
    buf += n;
    off += n;
    len -= n;
  }
  return Status::OK();
}

Status GrainExtent::AppendGrain(uint64_t g, const uint8_t* buf, size_t n) {
  const uint64_t gb = l_.grain_bytes;
  // Compressed outside the lock: the grain's marker, then the zlib stream.
  uLongf zlen = compressBound(uLong(gb));
  std::vector<uint8_t> record(12 + zlen);
  std::vector<uint8_t> grain;
  const uint8_t* src = buf;
  if (n < gb) {  // the disk's last grain: the rest reads as zeros
    grain.assign(gb, 0);
    std::memcpy(grain.data(), buf, n);
    src = grain.data();
  }
  if (compress2(record.data() + 12, &zlen, src, uLong(gb), Z_DEFAULT_COMPRESSION) != Z_OK)
    return IoError(file_->path() + ": deflate failed", EIO);
  StoreLE64(record.data(), g * (gb / 512));
  StoreLE32(record.data() + 8, uint32_t(zlen));
  record.resize((12 + zlen + 511) / 512 * 512, 0);

  UniqueMutexLock lock(mu_);
  WaitForGrain(g, lock);
  IMGFS_ASSIGN_OR_RETURN(Grain gr, LookupLocked(g));
  if (gr.kind != Grain::kUnallocated)
    return Unsupported(file_->path() + ": a streamOptimized grain cannot be written twice");
  const uint64_t host = next_free_;
  if ((host + record.size()) / 512 > UINT32_MAX) return NoSpace(file_->path() + ": the extent is full (2 TiB of sectors)");
  next_free_ += record.size();
  allocating_.insert(g);
  lock.unlock();
  Status st = file_->PWrite(host, record.data(), record.size());
  lock.lock();
  // The table entry is written back at flush, after a sync of the grain.
  if (st.ok()) st = SetEntryLocked(g, uint32_t(host / 512));
  allocating_.erase(g);
  allocated_.notify_all();
  return st;
}

// A zeroed sector is an end-of-stream marker (value, size and type 0); the
// file ends with it.
Status GrainExtent::WriteEndOfStreamLocked() {
  const std::vector<uint8_t> eos(512, 0);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(next_free_, eos.data(), eos.size()));
  if (file_->Size() > next_free_ + 512) IMGFS_RETURN_IF_ERROR(file_->Truncate(next_free_ + 512));
  return Status::OK();
}

}  // namespace imgfs::vmdk
