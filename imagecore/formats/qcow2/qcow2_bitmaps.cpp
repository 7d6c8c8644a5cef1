// Persistent dirty bitmaps kept in step with writes, the way the spec asks
// of a writer: the enabled ("auto") bitmaps are loaded at the first write
// and marked in_use on disk before any data changes; every change of the
// disk sets their bits in memory; a clean close writes them to new
// clusters and clears in_use. A crash leaves in_use set, which the spec
// reads as "may be outdated": never a stale bitmap that claims to be exact.
#include <algorithm>
#include <cstring>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/log.h"

namespace imgfs::qcow2 {

namespace {
// All tracked bitmaps together: a hostile directory may name thousands.
constexpr uint64_t kMaxTrackedTotal = 256ull << 20;
}  // namespace

std::vector<BitmapDirEntry> ParseBitmapDirectory(const std::vector<uint8_t>& dir, uint32_t max_entries) {
  std::vector<BitmapDirEntry> out;
  max_entries = std::min(max_entries, kMaxBitmaps);
  for (uint64_t p = 0; p + 24 <= dir.size() && out.size() < max_entries;) {
    BitmapDirEntry e;
    e.pos = p;
    e.table_offset = LoadBE64(&dir[p]);
    e.table_size = LoadBE32(&dir[p + 8]);
    e.flags = LoadBE32(&dir[p + 12]);
    e.type = dir[p + 16];
    e.granularity_bits = dir[p + 17];
    const uint64_t name_size = LoadBE16(&dir[p + 18]);
    e.extra_size = LoadBE32(&dir[p + 20]);
    if (p + 24 + e.extra_size + name_size > dir.size()) break;
    // Through data(): an empty name may end exactly at the directory's end.
    e.name.assign(reinterpret_cast<const char*>(dir.data()) + p + 24 + e.extra_size, name_size);
    out.push_back(std::move(e));
    p += (24 + e.extra_size + name_size + 7) & ~uint64_t(7);
  }
  return out;
}

std::string BitmapsExtensionProblem(const Header& h, uint64_t cluster_size, const std::vector<uint8_t>* dir) {
  if (h.bitmaps_ext_len != 24) return "bitmaps_ext: Invalid extension length";
  if (!h.has_bitmaps_ext || !(h.autoclear_features & kAutoclearBitmaps)) return "";
  if (h.bitmaps_reserved) return "bitmaps_ext: Reserved field is not zero";
  if (!h.nb_bitmaps) return "bitmaps_ext: found bitmaps extension with zero bitmaps";
  if (h.nb_bitmaps > kMaxBitmaps)
    return "bitmaps_ext: Image has " + std::to_string(h.nb_bitmaps) + " bitmaps, exceeding the maximum of 65535";
  if (!h.bitmap_directory_size || h.bitmap_directory_size > kMaxBitmapDirectory)
    return "bitmaps_ext: bitmap directory size (" + std::to_string(h.bitmap_directory_size) + ") is invalid";
  if (h.bitmap_directory_offset & (cluster_size - 1)) return "bitmaps_ext: invalid bitmap directory offset";
  if (!dir) return "";
  const size_t found = ParseBitmapDirectory(*dir, kMaxBitmaps).size();
  if (found > h.nb_bitmaps) return "More bitmaps found than specified in header extension";
  if (found < h.nb_bitmaps) return "Less bitmaps found than specified in header extension";
  return "";
}

std::string Qcow2Image::BitmapsProblem() const {
  std::string bad = BitmapsExtensionProblem(header_, cluster_size_, nullptr);
  if (!bad.empty() || !header_.has_bitmaps_ext || !(header_.autoclear_features & kAutoclearBitmaps)) return bad;
  auto dir = ReadBitmapDirectory();
  if (!dir.ok()) return dir.status().message();
  return BitmapsExtensionProblem(header_, cluster_size_, &dir.value());
}

Result<std::vector<uint8_t>> Qcow2Image::ReadBitmapDirectory() const {
  const uint64_t size = header_.bitmap_directory_size;
  // Bounded as qemu bounds it, and inside the file: a directory past the end
  // would read as 64 MiB of zeros, millions of empty entries.
  if (!header_.has_bitmaps_ext || !(header_.autoclear_features & kAutoclearBitmaps) || !size || size > kMaxBitmapDirectory ||
      !header_.nb_bitmaps || header_.nb_bitmaps > kMaxBitmaps || !WithinFile(header_.bitmap_directory_offset, size))
    return std::vector<uint8_t>{};
  std::vector<uint8_t> dir(size);
  IMGFS_RETURN_IF_ERROR(file_->PRead(header_.bitmap_directory_offset, dir.data(), size));
  return dir;
}

Result<bool> Qcow2Image::ReadBitmapTableLocked(const BitmapDirEntry& e, std::vector<uint64_t>* table) const {
  if (e.type != 1 || (e.extra_size && !(e.flags & kBitmapExtraCompatible))) return false;
  if (e.granularity_bits < 9 || e.granularity_bits > 31) return false;
  const uint64_t bytes = BitmapBytes(e);
  if (bytes > kMaxBitmapBytes) return false;
  if (e.table_size != (bytes + cluster_size_ - 1) / cluster_size_) return false;  // outdated size
  if (e.table_offset & (cluster_size_ - 1)) return false;
  if (e.table_size && !WithinFile(e.table_offset, uint64_t(e.table_size) * 8)) return false;
  std::vector<uint8_t> raw(uint64_t(e.table_size) * 8);
  if (!raw.empty()) IMGFS_RETURN_IF_ERROR(file_->PRead(e.table_offset, raw.data(), raw.size()));
  table->resize(e.table_size);
  for (uint32_t i = 0; i < e.table_size; ++i) {
    const uint64_t t = LoadBE64(&raw[uint64_t(i) * 8]);
    const uint64_t host = t & kBitmapOffsetMask;
    if (t & ~(kBitmapOffsetMask | 1)) return false;  // reserved bits
    if (host && ((t & 1) || (host & (cluster_size_ - 1)) || !WithinFile(host, cluster_size_))) return false;
    (*table)[i] = t;
  }
  return true;
}

uint64_t Qcow2Image::BitmapBytes(const BitmapDirEntry& e) const {
  const uint64_t nbits = (header_.size + (uint64_t(1) << e.granularity_bits) - 1) >> e.granularity_bits;
  return (nbits + 7) / 8;
}

Result<bool> Qcow2Image::ReadBitmapBitsLocked(const BitmapDirEntry& e, std::vector<uint8_t>* bits,
                                              std::vector<uint64_t>* table) const {
  IMGFS_ASSIGN_OR_RETURN(bool ok, ReadBitmapTableLocked(e, table));
  if (!ok) return false;
  const uint64_t bytes = BitmapBytes(e), nbits = (header_.size + (uint64_t(1) << e.granularity_bits) - 1) >> e.granularity_bits;
  bits->assign(bytes, 0);
  for (uint32_t i = 0; i < e.table_size; ++i) {
    const uint64_t t = (*table)[i], host = t & kBitmapOffsetMask;
    const uint64_t at = uint64_t(i) * cluster_size_;
    const uint64_t n = std::min(cluster_size_, bytes - at);
    if (host) IMGFS_RETURN_IF_ERROR(file_->PRead(host, &(*bits)[at], n));
    else if (t & 1) std::memset(&(*bits)[at], 0xff, n);
  }
  if (nbits % 8) bits->back() &= uint8_t((1u << (nbits % 8)) - 1);  // tail bits stay zero
  return true;
}

// Loads one enabled bitmap into memory; false (and nothing loaded) where it
// is not one this writer can keep exact: it is then only marked in_use.
Result<bool> Qcow2Image::LoadBitmapLocked(const BitmapDirEntry& e, TrackedBitmap* out) {
  uint64_t held = 0;
  for (const TrackedBitmap& t : tracked_) held += t.bits.size();
  std::vector<uint8_t> bits;
  std::vector<uint64_t> table;
  IMGFS_ASSIGN_OR_RETURN(bool ok, ReadBitmapBitsLocked(e, &bits, &table));
  if (!ok || held + bits.size() > kMaxTrackedTotal) return false;
  out->pos = e.pos;
  out->granularity_bits = e.granularity_bits;
  out->bits = std::move(bits);
  out->old_table = std::move(table);
  out->old_table_offset = e.table_offset;
  return true;
}

Status Qcow2Image::LoadTrackedBitmapsLocked() {
  IMGFS_ASSIGN_OR_RETURN(auto dir, ReadBitmapDirectory());
  for (const BitmapDirEntry& e : ParseBitmapDirectory(dir, header_.nb_bitmaps)) {
    if ((e.flags & (kBitmapAuto | kBitmapInUse)) != kBitmapAuto) continue;
    TrackedBitmap b;
    IMGFS_ASSIGN_OR_RETURN(bool ok, LoadBitmapLocked(e, &b));
    if (ok) tracked_.push_back(std::move(b));
    else Log(LogLevel::kInfo, file_->path() + ": bitmap '" + e.name + "' is not tracked; it is marked in use");
  }
  return Status::OK();
}

Status Qcow2Image::TrackAllBitmapsLocked() {
  IMGFS_ASSIGN_OR_RETURN(auto dir, ReadBitmapDirectory());
  for (const BitmapDirEntry& e : ParseBitmapDirectory(dir, header_.nb_bitmaps)) {
    if (e.flags & kBitmapInUse) continue;
    if (std::any_of(tracked_.begin(), tracked_.end(), [&](const TrackedBitmap& t) { return t.pos == e.pos; })) continue;
    TrackedBitmap b;
    IMGFS_ASSIGN_OR_RETURN(bool ok, LoadBitmapLocked(e, &b));
    b.enabled = (e.flags & kBitmapAuto) != 0;
    if (ok) tracked_.push_back(std::move(b));
  }
  return Status::OK();
}

void Qcow2Image::ResizeTrackedBitmapsLocked(uint64_t size) {
  for (size_t i = 0; i < tracked_.size();) {
    TrackedBitmap& b = tracked_[i];
    const uint64_t bits = (size + (uint64_t(1) << b.granularity_bits) - 1) >> b.granularity_bits;
    const uint64_t bytes = (bits + 7) / 8;
    if (bytes > kMaxBitmapBytes) {
      tracked_.erase(tracked_.begin() + long(i));  // stays in_use
      continue;
    }
    b.bits.resize(bytes, 0);
    if (bits % 8) b.bits.back() &= uint8_t((1u << (bits % 8)) - 1);
    ++i;
  }
}

void Qcow2Image::MarkDirtyLocked(uint64_t off, uint64_t len) {
  if (!len) return;
  for (TrackedBitmap& b : tracked_) {
    if (!b.enabled || b.bits.empty()) continue;
    uint64_t first = off >> b.granularity_bits;
    const uint64_t last = std::min<uint64_t>((off + len - 1) >> b.granularity_bits, b.bits.size() * 8 - 1);
    for (; first <= last && (first & 7); ++first) b.bits[first / 8] |= uint8_t(1u << (first & 7));
    if (first + 8 <= last + 1) {
      const uint64_t whole = (last + 1 - first) / 8;
      std::memset(&b.bits[first / 8], 0xff, whole);
      first += whole * 8;
    }
    for (; first <= last; ++first) b.bits[first / 8] |= uint8_t(1u << (first & 7));
  }
}

Result<std::pair<uint64_t, uint32_t>> Qcow2Image::WriteBitmapTableLocked(const std::vector<uint8_t>& bits) {
  const uint64_t n = (bits.size() + cluster_size_ - 1) / cluster_size_;
  std::vector<uint8_t> table(n * 8, 0);
  for (uint64_t i = 0; i < n; ++i) {
    const uint64_t at = i * cluster_size_;
    const uint64_t len = std::min(cluster_size_, bits.size() - at);
    if (std::all_of(&bits[at], &bits[at] + len, [](uint8_t x) { return x == 0; })) continue;
    IMGFS_ASSIGN_OR_RETURN(uint64_t host, AllocateClustersLocked(1));
    std::vector<uint8_t> cl(cluster_size_, 0);
    std::memcpy(cl.data(), &bits[at], len);
    IMGFS_RETURN_IF_ERROR(file_->PWrite(host, cl.data(), cl.size()));
    StoreBE64(&table[i * 8], host);
  }
  uint64_t table_off = 0;
  if (n) {
    const uint64_t clusters = (n * 8 + cluster_size_ - 1) / cluster_size_;
    IMGFS_ASSIGN_OR_RETURN(table_off, AllocateClustersLocked(clusters));
    overlap_.Add(table_off >> cluster_bits_, clusters, kMetaBitmapTable);
    table.resize(clusters * cluster_size_, 0);
    IMGFS_RETURN_IF_ERROR(file_->PWrite(table_off, table.data(), table.size()));
  }
  return std::make_pair(table_off, uint32_t(n));
}

void Qcow2Image::ReleaseBitmapTableLocked(const std::vector<uint64_t>& table, uint64_t table_offset) {
  for (uint64_t t : table)
    if (t & kBitmapOffsetMask) pending_release_.emplace_back(t & kBitmapOffsetMask, cluster_size_);
  if (table_offset && !table.empty()) pending_release_.emplace_back(table_offset, table.size() * 8);
}

// Data and tables go to new clusters and are durable (refcounts too)
// before a directory entry points at them; in_use is cleared only after
// that; the old clusters are released last, so a crash at any point leaves
// an in_use bitmap or a leak, never a bitmap that reads wrong.
Status Qcow2Image::StoreTrackedBitmapsLocked() {
  if (tracked_.empty()) return Status::OK();
  ResizeTrackedBitmapsLocked(header_.size);  // whatever a failed resize left, the size on disk rules
  const uint64_t dir_off = header_.bitmap_directory_offset;
  for (TrackedBitmap& b : tracked_) {
    const uint64_t old_n = b.old_table.size();
    IMGFS_ASSIGN_OR_RETURN(auto stored, WriteBitmapTableLocked(b.bits));  // at its size after any resize
    const auto [table_off, n] = stored;
    IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(false));
    IMGFS_RETURN_IF_ERROR(file_->Sync());
    // Offset and size: two writes, both while the entry is still in_use.
    uint8_t raw[8];
    StoreBE64(raw, table_off);
    IMGFS_RETURN_IF_ERROR(file_->PWrite(dir_off + b.pos, raw, 8));
    if (n != old_n) {
      StoreBE32(raw, uint32_t(n));
      IMGFS_RETURN_IF_ERROR(file_->PWrite(dir_off + b.pos + 8, raw, 4));
    }
    IMGFS_RETURN_IF_ERROR(file_->Sync());
    ReleaseBitmapTableLocked(b.old_table, b.old_table_offset);
  }
  // Now every entry points at its new, complete data: clear in_use.
  IMGFS_ASSIGN_OR_RETURN(auto dir, ReadBitmapDirectory());
  for (const TrackedBitmap& b : tracked_) {
    if (b.pos + 16 > dir.size()) continue;
    uint8_t raw[4];
    StoreBE32(raw, LoadBE32(&dir[b.pos + 12]) & ~kBitmapInUse);
    IMGFS_RETURN_IF_ERROR(file_->PWrite(dir_off + b.pos + 12, raw, 4));
  }
  IMGFS_RETURN_IF_ERROR(file_->Sync());
  tracked_.clear();
  return FlushMetadataLocked(/*apply_releases=*/true);
}

}  // namespace imgfs::qcow2
