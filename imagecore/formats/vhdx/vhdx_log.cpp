#include "formats/vhdx/vhdx_log.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "base/crc32c.h"
#include "base/endian.h"

namespace imgfs::vhdx {
namespace {

constexpr uint64_t kSector = 4096;
constexpr uint64_t kEntryHeaderBytes = 64, kDescriptorBytes = 32;
constexpr uint64_t kMaxLogBytes = 256 * kMiB;

// One entry of the log, checked.
struct Entry {
  uint64_t at = 0;  // offset in the log
  uint64_t length = 0;
  uint64_t tail = 0;
  uint64_t sequence = 0;
  uint64_t flushed_file_offset = 0;
  uint64_t last_file_offset = 0;
};

// Reads the log as a ring: `n` bytes from `at`, wrapping at its end.
void RingCopy(const std::vector<uint8_t>& log, uint64_t at, uint64_t n, uint8_t* out) {
  const uint64_t first = std::min<uint64_t>(n, log.size() - at);
  std::memcpy(out, log.data() + at, first);
  std::memcpy(out + first, log.data(), n - first);
}

// The entry at `at` if it is whole and valid (signature, sizes, log GUID,
// checksum, every descriptor and data sector of its sequence number);
// `budget` bounds the bytes checksummed over the whole search.
std::optional<Entry> EntryAt(const std::vector<uint8_t>& log, uint64_t at, const Guid& guid, uint64_t* budget,
                             std::vector<uint8_t>* bytes) {
  const uint8_t* p = log.data() + at;
  if (std::memcmp(p, "loge", 4)) return std::nullopt;
  Entry e;
  e.at = at;
  e.length = LoadLE32(p + 8);
  e.tail = LoadLE32(p + 12);
  e.sequence = LoadLE64(p + 16);
  const uint64_t count = LoadLE32(p + 24);
  e.flushed_file_offset = LoadLE64(p + 48);
  e.last_file_offset = LoadLE64(p + 56);
  if (!e.length || e.length % kSector || e.length > log.size() || e.tail % kSector || e.tail >= log.size())
    return std::nullopt;
  if (Guid::Load(p + 32) != guid || !e.sequence) return std::nullopt;
  const uint64_t desc_bytes = (kEntryHeaderBytes + count * kDescriptorBytes + kSector - 1) / kSector * kSector;
  if (count > e.length / kDescriptorBytes || desc_bytes > e.length) return std::nullopt;
  if (*budget < e.length) return std::nullopt;
  *budget -= e.length;
  bytes->resize(e.length);
  RingCopy(log, at, e.length, bytes->data());
  uint8_t* b = bytes->data();
  const uint32_t stored = LoadLE32(b + 4);
  std::memset(b + 4, 0, 4);
  const uint32_t sum = Crc32c(b, e.length);
  StoreLE32(b + 4, stored);
  if (sum != stored) return std::nullopt;
  uint64_t data_sectors = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint8_t* d = b + kEntryHeaderBytes + i * kDescriptorBytes;
    if (LoadLE64(d + 24) != e.sequence) return std::nullopt;
    if (!std::memcmp(d, "desc", 4)) {
      const uint64_t s = desc_bytes + data_sectors++ * kSector;
      if (s + kSector > e.length) return std::nullopt;
      const uint8_t* ds = b + s;
      if (std::memcmp(ds, "data", 4) || (uint64_t(LoadLE32(ds + 4)) << 32 | LoadLE32(ds + 4092)) != e.sequence)
        return std::nullopt;
    } else if (std::memcmp(d, "zero", 4)) {
      return std::nullopt;
    }
  }
  if (desc_bytes + data_sectors * kSector != e.length) return std::nullopt;
  return e;
}

// The writes of one valid entry (`b` its bytes), in order.
Status AddWrites(const std::vector<uint8_t>& b, Replay* out) {
  const uint64_t count = LoadLE32(b.data() + 24);
  const uint64_t desc_bytes = (kEntryHeaderBytes + count * kDescriptorBytes + kSector - 1) / kSector * kSector;
  uint64_t data_sectors = 0;
  for (uint64_t i = 0; i < count; ++i) {
    const uint8_t* d = b.data() + kEntryHeaderBytes + i * kDescriptorBytes;
    Replay::Write w;
    w.offset = LoadLE64(d + 16);
    if (w.offset % kSector || w.offset > kMaxDiskSize * 2) return Corrupt("log write at an unaligned offset");
    if (!std::memcmp(d, "zero", 4)) {
      w.length = LoadLE64(d + 8);
      if (!w.length || w.length % kSector || w.length > kMaxDiskSize) return Corrupt("log zero range of a bad length");
    } else {
      const uint8_t* s = b.data() + desc_bytes + data_sectors++ * kSector;
      w.length = kSector;
      w.data.resize(kSector);
      std::memcpy(w.data.data(), d + 8, 8);              // the leading bytes
      std::memcpy(w.data.data() + 8, s + 8, 4084);       // the sector's own
      std::memcpy(w.data.data() + 4092, d + 4, 4);       // the trailing bytes
    }
    out->writes.push_back(std::move(w));
  }
  return Status::OK();
}

}  // namespace

Result<std::optional<Replay>> ReadLog(const io::File& f, const Header& h) {
  if (h.log.zero() || !h.log_length) return std::optional<Replay>();
  if (h.log_length > kMaxLogBytes) return Unsupported("a log of more than 256 MiB");
  std::vector<uint8_t> log(h.log_length);
  IMGFS_RETURN_IF_ERROR(f.PRead(h.log_offset, log.data(), log.size()));
  // Every valid entry, by where it starts.
  uint64_t budget = 4 * log.size() + 64 * kMiB;
  std::vector<uint8_t> bytes;
  std::map<uint64_t, Entry> valid;
  for (uint64_t at = 0; at < log.size(); at += kSector)
    if (auto e = EntryAt(log, at, h.log, &budget, &bytes)) valid[at] = *e;
  // None: the header got its new log GUID, and the writer stopped before
  // the entry was whole. Nothing was applied either: nothing to replay.
  if (valid.empty()) return std::optional<Replay>();
  // The newest entry ends the active sequence; its tail starts it.
  const Entry* last = nullptr;
  for (const auto& [at, e] : valid)
    if (!last || e.sequence > last->sequence) last = &e;
  std::vector<const Entry*> seq;
  for (uint64_t at = last->tail;;) {
    auto it = valid.find(at);
    if (it == valid.end() || (!seq.empty() && it->second.sequence != seq.back()->sequence + 1) ||
        seq.size() > valid.size())
      return Corrupt("the log's active sequence is broken (no valid entry follows at offset " + std::to_string(at) + ")");
    seq.push_back(&it->second);
    if (&it->second == last) break;
    at = (at + it->second.length) % log.size();
  }
  if (f.Size() < last->flushed_file_offset)
    return Corrupt("the file is shorter than its log says it was (" + std::to_string(f.Size()) + " < " +
                   std::to_string(last->flushed_file_offset) + " bytes)");
  Replay r;
  r.last_file_offset = last->last_file_offset;
  for (const Entry* e : seq) {
    bytes.resize(e->length);
    RingCopy(log, e->at, e->length, bytes.data());
    IMGFS_RETURN_IF_ERROR(AddWrites(bytes, &r));
  }
  return std::optional<Replay>(std::move(r));
}

Status ApplyReplay(io::File& f, const Replay& replay) {
  for (const Replay::Write& w : replay.writes) {
    if (!w.data.empty()) {
      IMGFS_RETURN_IF_ERROR(f.PWrite(w.offset, w.data.data(), w.data.size()));
      continue;
    }
    std::vector<uint8_t> zeros(std::min<uint64_t>(w.length, kMiB), 0);
    for (uint64_t at = 0; at < w.length; at += zeros.size())
      IMGFS_RETURN_IF_ERROR(f.PWrite(w.offset + at, zeros.data(), std::min<uint64_t>(zeros.size(), w.length - at)));
  }
  if (f.Size() < replay.last_file_offset) IMGFS_RETURN_IF_ERROR(f.Truncate(replay.last_file_offset));
  return Status::OK();
}

uint64_t LogWriter::EntryBytes(size_t sectors) const {
  const uint64_t desc = (kEntryHeaderBytes + sectors * kDescriptorBytes + kSector - 1) / kSector * kSector;
  return desc + sectors * kSector;
}

size_t LogWriter::max_sectors() const {
  size_t n = max_entry_bytes() / kSector;
  while (n && EntryBytes(n) > max_entry_bytes()) --n;
  return n;
}

bool LogWriter::NeedsNewGuid(size_t sectors) const {
  const uint64_t len = EntryBytes(sectors);
  const uint64_t at = head_ + len > length_ ? 0 : head_;
  return last_end_ > last_start_ && at < last_end_ && last_start_ < at + len;
}

void LogWriter::Restart(const Guid& guid) {
  guid_ = guid;
  head_ = 0;
  last_start_ = last_end_ = 0;
}

Status LogWriter::Write(io::File& f, const std::vector<std::pair<uint64_t, const uint8_t*>>& sectors,
                        uint64_t file_size) {
  const uint64_t len = EntryBytes(sectors.size());
  if (len > max_entry_bytes()) return InvalidArgument("log entry larger than half the log");
  if (NeedsNewGuid(sectors.size())) return InvalidArgument("log entry over the newest one under one log GUID");
  const uint64_t at = head_ + len > length_ ? 0 : head_;
  const uint64_t seq = ++sequence_;
  const uint64_t desc = len - sectors.size() * kSector;
  std::vector<uint8_t> e(len, 0);
  uint8_t* h = e.data();
  std::memcpy(h, "loge", 4);
  StoreLE32(h + 8, uint32_t(len));
  StoreLE32(h + 12, uint32_t(at));  // the tail: this entry alone (all before it are applied and durable)
  StoreLE64(h + 16, seq);
  StoreLE32(h + 24, uint32_t(sectors.size()));
  guid_.Store(h + 32);
  StoreLE64(h + 48, file_size);
  StoreLE64(h + 56, file_size);
  for (size_t i = 0; i < sectors.size(); ++i) {
    uint8_t* d = h + kEntryHeaderBytes + i * kDescriptorBytes;
    const uint8_t* src = sectors[i].second;
    std::memcpy(d, "desc", 4);
    std::memcpy(d + 4, src + 4092, 4);
    std::memcpy(d + 8, src, 8);
    StoreLE64(d + 16, sectors[i].first);
    StoreLE64(d + 24, seq);
    uint8_t* ds = h + desc + i * kSector;
    std::memcpy(ds, "data", 4);
    StoreLE32(ds + 4, uint32_t(seq >> 32));
    std::memcpy(ds + 8, src + 8, 4084);
    StoreLE32(ds + 4092, uint32_t(seq));
  }
  StoreLE32(h + 4, Crc32c(e.data(), e.size()));
  IMGFS_RETURN_IF_ERROR(f.PWrite(offset_ + at, e.data(), e.size()));
  IMGFS_RETURN_IF_ERROR(f.Sync());
  last_start_ = at;
  last_end_ = at + len;
  head_ = last_end_ == length_ ? 0 : last_end_;
  return Status::OK();
}

namespace {

// The base file with the replayed writes laid over it: runs by their start.
class ReplayedFile final : public io::File {
 public:
  ReplayedFile(const io::File& base, Replay replay)
      : File(base.path()), base_(base), size_(std::max(base.Size(), replay.last_file_offset)) {
    for (Replay::Write& w : replay.writes) Lay(w.offset, w.length, std::make_shared<std::vector<uint8_t>>(std::move(w.data)));
  }
  Status PRead(uint64_t off, void* buf, size_t n) const override {
    auto* p = static_cast<uint8_t*>(buf);
    IMGFS_RETURN_IF_ERROR(base_.PRead(off, p, n));
    auto it = runs_.upper_bound(off);
    if (it != runs_.begin()) --it;
    for (; it != runs_.end() && it->first < off + n; ++it) {
      const uint64_t s = std::max(off, it->first), e = std::min(off + n, it->second.end);
      if (s >= e) continue;
      const Run& r = it->second;
      if (r.data->empty()) std::memset(p + (s - off), 0, e - s);
      else std::memcpy(p + (s - off), r.data->data() + (s - r.source), e - s);
    }
    return Status::OK();
  }
  Status PWrite(uint64_t, const void*, size_t) override { return ReadOnly(path() + ": log replayed in memory only"); }
  uint64_t Size() const override { return size_; }
  Status Truncate(uint64_t) override { return ReadOnly(path() + ": log replayed in memory only"); }
  Status Sync() override { return Status::OK(); }
  uint64_t AllocatedBytes() const override { return base_.AllocatedBytes(); }
  uint64_t Seek(uint64_t off, bool want_data) const override { return want_data ? off : size_; }
  bool writable() const override { return false; }

 private:
  struct Run {
    uint64_t end;
    uint64_t source;  // the offset data->front() stands for
    std::shared_ptr<std::vector<uint8_t>> data;  // empty: zeros
  };
  // Lays [off, off+len) over what is there: later writes win.
  void Lay(uint64_t off, uint64_t len, std::shared_ptr<std::vector<uint8_t>> data) {
    const uint64_t end = off + len;
    auto it = runs_.upper_bound(off);
    if (it != runs_.begin()) --it;
    while (it != runs_.end() && it->first < end) {
      const uint64_t s = it->first;
      Run r = it->second;
      if (r.end <= off) {
        ++it;
        continue;
      }
      it = runs_.erase(it);
      if (s < off) runs_[s] = Run{off, r.source, r.data};
      if (r.end > end) runs_[end] = Run{r.end, r.source, r.data};
    }
    runs_[off] = Run{end, off, std::move(data)};
  }
  const io::File& base_;
  const uint64_t size_;
  std::map<uint64_t, Run> runs_;
};

}  // namespace

std::unique_ptr<io::File> ReplayedView(const io::File& base, Replay replay) {
  return std::make_unique<ReplayedFile>(base, std::move(replay));
}

}  // namespace imgfs::vhdx
