// VHDX writes: data to its block, metadata (BAT entries, sector bitmaps)
// through the page cache and the log (see vhdx_image.h for the order).
#include <algorithm>
#include <cstring>
#include <vector>

#include "base/endian.h"
#include "formats/vhdx/vhdx_image.h"
#include "imagecore/log.h"

namespace imgfs::vhdx {
namespace {
constexpr uint64_t kSector = 4096;  // of the log: what one descriptor carries
constexpr size_t kMaxDirtySectors = 64;  // a batch; far fewer pages than the cache holds
}  // namespace

VhdxImage::~VhdxImage() {
  if (!writable_) return;
  MutexLock l(meta_mu_);
  Status st = CloseLogLocked();
  if (!st.ok()) Log(LogLevel::kError, file_->path() + ": flush at close failed: " + st.message());
}

void VhdxImage::DropWriteClaim() {
  if (writable_) {
    MutexLock l(meta_mu_);
    Status st = CloseLogLocked();
    if (!st.ok()) Log(LogLevel::kError, file_->path() + ": flush failed: " + st.message());
  }
  Image::DropWriteClaim();
}

Status VhdxImage::CloseLogLocked() {
  if (!log_open_ || failed_) return Status::OK();
  IMGFS_RETURN_IF_ERROR(FlushLocked());
  IMGFS_RETURN_IF_ERROR(file_->Sync());  // what the last entry wrote in place
  Header h = header_;
  h.log = Guid();
  IMGFS_RETURN_IF_ERROR(WriteHeadersLocked(h));
  log_open_ = false;
  return Status::OK();
}

Status VhdxImage::OpenLogLocked() {
  if (log_open_) return Status::OK();
  Header h = header_;
  h.log = Guid::Random();
  IMGFS_RETURN_IF_ERROR(WriteHeadersLocked(h));
  log_->Restart(h.log);
  log_open_ = true;
  return Status::OK();
}

Status VhdxImage::ClaimWriting() {
  IMGFS_RETURN_IF_ERROR(Image::ClaimWriting());
  MutexLock l(meta_mu_);
  if (!pending_ || !log_) return Status::OK();
  return ReplayIntoFile();
}

Status VhdxImage::ReplayIntoFile() {
  IMGFS_RETURN_IF_ERROR(ApplyReplay(*file_, *pending_));
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  replay_applied_ = true;  // the pages cached from the view read the same
  pending_.reset();
  Header h = header_;
  h.file_write = Guid::Random();
  h.log = Guid();  // the log is empty
  IMGFS_RETURN_IF_ERROR(WriteHeadersLocked(h));
  known_end_ = std::max(known_end_.load(), file_->Size());
  end_ = std::max(end_, (file_->Size() + kMiB - 1) / kMiB * kMiB);
  Log(LogLevel::kInfo, file_->path() + ": log replayed");
  return Status::OK();
}

Status VhdxImage::WriteHeadersLocked(Header h) {
  std::vector<uint8_t> buf(kHeaderBytes);
  for (int pass = 0; pass < 2; ++pass) {  // the other slot, then this one: both current
    h.sequence = header_.sequence + 1;
    const int slot = 1 - current_slot_;
    StoreHeader(h, buf.data());
    IMGFS_RETURN_IF_ERROR(file_->PWrite(kHeaderOffsets[slot], buf.data(), buf.size()));
    IMGFS_RETURN_IF_ERROR(file_->Sync());
    header_ = h;
    current_slot_ = slot;
  }
  return Status::OK();
}

Status VhdxImage::StartChangesLocked(bool content) {
  if (started_) return Status::OK();
  if (pending_) return ReadOnly(file_->path() + ": its log must be replayed first (not claimed for writing)");
  Header h = header_;
  h.file_write = Guid::Random();
  // The data write GUID names what a reader sees: not for a change of
  // the parent's name or link, nor for a commit's base (see KeepIdentity).
  // Its children would take the disk for another.
  if (content && !keep_identity_) h.data_write = Guid::Random();
  h.log = Guid::Random();  // the log is used from now on
  IMGFS_RETURN_IF_ERROR(WriteHeadersLocked(h));
  log_->Restart(h.log);
  log_open_ = true;
  started_ = true;
  started_fast_ = true;
  return Status::OK();
}

Status VhdxImage::EnsureStarted(bool content) {
  if (!writable_) return ReadOnly(file_->path() + ": opened read-only");
  if (!read_only_reason_.empty()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  if (started_fast_.load(std::memory_order_acquire)) return Status::OK();
  MutexLock l(meta_mu_);
  return StartChangesLocked(content);
}

Result<uint64_t> VhdxImage::AllocateLocked(uint64_t bytes) {
  const uint64_t at = end_;
  IMGFS_RETURN_IF_ERROR(file_->Truncate(at + bytes));  // reads as zeros
  end_ = at + bytes;
  known_end_ = std::max(known_end_.load(), end_);
  return at;
}

Status VhdxImage::SetEntryLocked(uint64_t index, uint64_t value) {
  return SetWordLocked(bat_offset_ + index * 8, value);
}

Status VhdxImage::SetWordLocked(uint64_t at, uint64_t value) {
  uint8_t b[8];
  StoreLE64(b, value);
  return SetBytesLocked(at, b, sizeof b);
}

Status VhdxImage::SetBytesLocked(uint64_t at, const uint8_t* data, size_t len) {
  while (len) {
    const uint64_t page = at / kPageBytes * kPageBytes;
    const size_t n = size_t(std::min<uint64_t>(len, page + kPageBytes - at));
    IMGFS_ASSIGN_OR_RETURN(uint8_t * p, PageLocked(page));
    std::memcpy(p + (at - page), data, n);
    pages_.MarkDirty(page);
    for (uint64_t s = at / kSector * kSector; s < at + n; s += kSector) dirty_.insert(s);
    at += n;
    data += n;
    len -= n;
  }
  return Status::OK();
}

Result<uint64_t> VhdxImage::BitmapBlockLocked(uint64_t block) {
  const uint64_t index = geometry_->BitmapEntry(block);
  uint64_t e;
  {
    MutexLock l(bat_mu_);
    IMGFS_ASSIGN_OR_RETURN(e, BatEntryLocked(index));
  }
  if (EntryState(e) == kBitmapPresent) return EntryOffset(e);
  IMGFS_ASSIGN_OR_RETURN(const uint64_t at, AllocateLocked(kMiB));
  MutexLock l(bat_mu_);
  IMGFS_RETURN_IF_ERROR(SetEntryLocked(index, MakeEntry(kBitmapPresent, at)));
  return at;
}

Status VhdxImage::SetBitsLocked(uint64_t block, uint64_t first, uint64_t count) {
  IMGFS_ASSIGN_OR_RETURN(const uint64_t sb, BitmapBlockLocked(block));
  const uint64_t per_block = params_.block_size / params_.logical_sector;
  uint64_t bit = block % geometry_->chunk_ratio * per_block + first;
  MutexLock l(bat_mu_);
  for (uint64_t end = bit + count; bit < end;) {
    const uint64_t at = sb + bit / 8;
    const uint64_t page = at / kPageBytes * kPageBytes;
    IMGFS_ASSIGN_OR_RETURN(uint8_t * p, PageLocked(page));
    bool changed = false;
    // Bit by bit to a byte boundary, then whole bytes, within this page.
    for (; bit < end && sb + bit / 8 < page + kPageBytes; ) {
      uint8_t& byte = p[sb + bit / 8 - page];
      if (bit % 8 == 0 && end - bit >= 8) {
        changed |= byte != 0xff;
        byte = 0xff;
        bit += 8;
      } else {
        changed |= !(byte >> (bit % 8) & 1);
        byte = uint8_t(byte | 1 << (bit % 8));
        ++bit;
      }
      dirty_.insert((sb + (bit - 1) / 8) / kSector * kSector);
    }
    if (changed) pages_.MarkDirty(page);
  }
  return Status::OK();
}

// The sectors of [off, off+len) (within `block`, stored at `host`), whole:
// the bytes the write leaves of a partly written sector come from this
// file where the sector is here, else from below. Then their bits.
Status VhdxImage::WriteSectorsLocked(uint64_t block, uint64_t host, uint64_t off, const uint8_t* buf, size_t len,
                                     const LayerReader* below) {
  const uint64_t bs = params_.block_size, ss = params_.logical_sector;
  const uint64_t within = off % bs, first = within / ss, last = (within + len + ss - 1) / ss;
  std::vector<uint8_t> data((last - first) * ss);
  auto fill = [&](uint64_t sector, uint8_t* out) -> Status {
    bool here = false;
    {
      MutexLock l(bat_mu_);
      uint64_t e;
      IMGFS_ASSIGN_OR_RETURN(e, BatEntryLocked(geometry_->PayloadEntry(block)));
      if (EntryState(e) == kPartiallyPresent) {
        IMGFS_ASSIGN_OR_RETURN(auto run, SectorRunLocked(block, sector, 1));
        here = run.first;
      }
    }
    if (here) return file_->PRead(host + sector * ss, out, ss);
    if (below) return below->Read(block * bs + sector * ss, out, ss);
    std::memset(out, 0, ss);
    return Status::OK();
  };
  if (within % ss) IMGFS_RETURN_IF_ERROR(fill(first, data.data()));
  if ((within + len) % ss && (last - 1 > first || within % ss == 0))
    IMGFS_RETURN_IF_ERROR(fill(last - 1, data.data() + (last - 1 - first) * ss));
  std::memcpy(data.data() + (within - first * ss), buf, len);
  IMGFS_RETURN_IF_ERROR(file_->PWrite(host + first * ss, data.data(), data.size()));
  return SetBitsLocked(block, first, last - first);
}

Status VhdxImage::WriteNewBlockLocked(uint64_t block, uint64_t off, const uint8_t* buf, size_t len,
                                      const LayerReader* below) {
  const uint64_t bs = params_.block_size;
  uint64_t e;
  {
    MutexLock l(bat_mu_);
    IMGFS_ASSIGN_OR_RETURN(e, BatEntryLocked(geometry_->PayloadEntry(block)));
  }
  const uint8_t state = EntryState(e);
  if (state == kFullyPresent) return file_->PWrite(EntryOffset(e) + off % bs, buf, len);  // allocated meanwhile
  if (state == kPartiallyPresent) return WriteSectorsLocked(block, EntryOffset(e), off, buf, len, below);
  if (state != kNotPresent && state != kUndefined && state != kZero && state != kUnmapped && state != 5)
    return Corrupt(file_->path() + ": block " + std::to_string(block) + " has the unknown state " + std::to_string(state));
  IMGFS_ASSIGN_OR_RETURN(const uint64_t host, AllocateLocked(bs));
  // A differencing disk's block that reads its parent keeps reading it
  // where this write does not reach: partly present, sector by sector.
  const bool whole = off % bs == 0 && (len == bs || off + len == params_.disk_size);
  if (params_.has_parent && state == kNotPresent && !whole) {
    IMGFS_RETURN_IF_ERROR(WriteSectorsLocked(block, host, off, buf, len, below));
    MutexLock l(bat_mu_);
    return SetEntryLocked(geometry_->PayloadEntry(block), MakeEntry(kPartiallyPresent, host));
  }
  // Every other state reads zeros where this write does not reach: so does
  // the fresh block. The data first, then the entry that names it.
  IMGFS_RETURN_IF_ERROR(file_->PWrite(host + off % bs, buf, len));
  MutexLock l(bat_mu_);
  return SetEntryLocked(geometry_->PayloadEntry(block), MakeEntry(kFullyPresent, host));
}

Status VhdxImage::WriteInBlock(uint64_t off, const uint8_t* buf, size_t len, const LayerReader* below) {
  const uint64_t block = off / params_.block_size;
  uint64_t e;
  {
    MutexLock l(bat_mu_);
    IMGFS_ASSIGN_OR_RETURN(e, BatEntryLocked(geometry_->PayloadEntry(block)));
  }
  if (EntryState(e) == kFullyPresent) {  // the common case: no metadata changes, no lock
    IMGFS_RETURN_IF_ERROR(CheckBlockAt(block, EntryOffset(e)));
    return file_->PWrite(EntryOffset(e) + off % params_.block_size, buf, len);
  }
  MutexLock l(meta_mu_);
  if (failed_) return IoError(file_->path() + ": an earlier flush failed; reopen the image", EIO);
  IMGFS_RETURN_IF_ERROR(WriteNewBlockLocked(block, off, buf, len, below));
  return MaybeFlushLocked();
}

Status VhdxImage::Write(uint64_t off, const void* buf, size_t len, const LayerReader* below) {
  IMGFS_RETURN_IF_ERROR(EnsureStarted());
  if (off > params_.disk_size || len > params_.disk_size - off) return InvalidArgument("write past the end of the disk");
  const auto* p = static_cast<const uint8_t*>(buf);
  while (len) {
    const size_t n = size_t(std::min<uint64_t>(len, params_.block_size - off % params_.block_size));
    IMGFS_RETURN_IF_ERROR(WriteInBlock(off, p, n, below));
    off += n;
    p += n;
    len -= n;
  }
  return Status::OK();
}

Status VhdxImage::WriteZeroes(uint64_t off, uint64_t len, bool unmap, const LayerReader* below) {
  IMGFS_RETURN_IF_ERROR(EnsureStarted());
  if (off > params_.disk_size || len > params_.disk_size - off) return InvalidArgument("zeroing past the end of the disk");
  const uint64_t bs = params_.block_size;
  std::vector<uint8_t> zeros;
  while (len) {
    const uint64_t block = off / bs;
    const uint64_t n = std::min<uint64_t>(len, bs - off % bs);
    const bool whole = off % bs == 0 && (n == bs || off + n == params_.disk_size);
    uint64_t e;
    {
      MutexLock l(bat_mu_);
      IMGFS_ASSIGN_OR_RETURN(e, BatEntryLocked(geometry_->PayloadEntry(block)));
    }
    const uint8_t state = EntryState(e);
    const bool reads_zero = state == kZero || state == kUndefined || state == kUnmapped || state == 5 ||
                            (state == kNotPresent && !params_.has_parent);
    if (reads_zero) {
      // Nothing to do.
    } else if (whole && !params_.leave_blocks_allocated) {
      // A discard leaves the block UNMAPPED, a hole; zeroing leaves it
      // ZERO. A differencing disk's is always ZERO: UNMAPPED there may
      // show the parent. Its space goes back to the host on a discard
      // (it is never reused: a hole).
      const uint8_t to = unmap && !params_.has_parent ? kUnmapped : kZero;
      MutexLock m(meta_mu_);
      {
        MutexLock l(bat_mu_);
        IMGFS_RETURN_IF_ERROR(SetEntryLocked(geometry_->PayloadEntry(block), MakeEntry(to, 0)));
      }
      if (unmap && (state == kFullyPresent || state == kPartiallyPresent))
        IMGFS_RETURN_IF_ERROR(file_->Deallocate(EntryOffset(e), bs));
      IMGFS_RETURN_IF_ERROR(MaybeFlushLocked());
    } else if (state == kFullyPresent && unmap && off % 4096 == 0 && n % 4096 == 0) {
      IMGFS_RETURN_IF_ERROR(file_->Deallocate(EntryOffset(e) + off % bs, n));  // reads zeros
    } else {
      zeros.assign(size_t(std::min<uint64_t>(n, 4 * kMiB)), 0);
      for (uint64_t done = 0; done < n; done += zeros.size()) {
        const size_t k = size_t(std::min<uint64_t>(zeros.size(), n - done));
        IMGFS_RETURN_IF_ERROR(WriteInBlock(off + done, zeros.data(), k, below));
      }
    }
    off += n;
    len -= n;
  }
  return Status::OK();
}

Status VhdxImage::MaybeFlushLocked() {
  if (dirty_.size() < std::min(kMaxDirtySectors, log_->max_sectors())) return Status::OK();
  return FlushLocked();
}

Status VhdxImage::Flush() {
  if (!writable_) return Status::OK();
  MutexLock l(meta_mu_);
  return FlushLocked();
}

Status VhdxImage::FlushLocked() {
  if (failed_) return IoError(file_->path() + ": an earlier flush failed; reopen the image", EIO);
  // The data first, and with it whatever the last entry wrote in place.
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  if (dirty_.empty()) return Status::OK();
  std::vector<std::vector<uint8_t>> copies;
  std::vector<std::pair<uint64_t, const uint8_t*>> sectors;
  {
    MutexLock l(bat_mu_);
    for (uint64_t at : dirty_) {
      const uint64_t page = at / kPageBytes * kPageBytes;
      IMGFS_ASSIGN_OR_RETURN(uint8_t * p, PageLocked(page));
      copies.emplace_back(p + (at - page), p + (at - page) + kSector);
    }
  }
  size_t i = 0;
  for (uint64_t at : dirty_) sectors.emplace_back(at, copies[i++].data());
  failed_ = true;  // until every step below is done
  IMGFS_RETURN_IF_ERROR(OpenLogLocked());
  if (log_->NeedsNewGuid(sectors.size())) {
    // The ring wraps onto the newest entry: a new log GUID voids it (it
    // is applied and durable since the sync above) and every older one.
    Header h = header_;
    h.log = Guid::Random();
    IMGFS_RETURN_IF_ERROR(WriteHeadersLocked(h));
    log_->Restart(h.log);
  }
  IMGFS_RETURN_IF_ERROR(log_->Write(*file_, sectors, file_->Size()));
  for (const auto& [at, data] : sectors) IMGFS_RETURN_IF_ERROR(file_->PWrite(at, data, kSector));
  {
    MutexLock l(bat_mu_);
    IMGFS_RETURN_IF_ERROR(pages_.WriteBack([](uint64_t, const uint8_t*) { return Status::OK(); }));
  }
  dirty_.clear();
  failed_ = false;
  return Status::OK();
}

}  // namespace imgfs::vhdx
