// qemu-img bitmap for qcow2: add, remove, clear, enable, disable and merge
// persistent dirty bitmaps. Every step runs on a copy of the directory in
// memory; the result is stored the way a header change is made safe: new
// bits, tables and directory go to new clusters and are durable, then one
// write of the header cluster switches to them, then the old clusters are
// released. A crash leaves the old bitmaps or the new ones, and at most a
// leak; a failed step leaves the image as it was.
#include <algorithm>
#include <cstring>

#include "base/endian.h"
#include "formats/qcow2/qcow2_image.h"
#include "imagecore/mutex.h"

namespace imgfs::qcow2 {

struct BitmapSlot {
  BitmapDirEntry entry;
  std::vector<uint8_t> extra;  // the entry's extra data, kept as it is
  bool removed = false;
  bool bits_loaded = false;    // `bits` holds the bitmap (changed or to be)
  bool rewrite = false;        // `bits` replaces the stored data
  std::vector<uint8_t> bits;
  std::vector<uint64_t> old_table;  // read when the stored data goes away
};

namespace {
using Slot = BitmapSlot;

Slot* Find(std::vector<Slot>& slots, const std::string& name) {
  for (Slot& s : slots)
    if (!s.removed && s.entry.name == name) return &s;
  return nullptr;
}

Status NotFound(const std::string& name) { return InvalidArgument("Dirty bitmap '" + name + "' not found"); }
Status Inconsistent(const std::string& name) {
  return InvalidArgument("Bitmap '" + name + "' is inconsistent and cannot be used (only --remove can take it away)");
}

uint64_t BitCount(uint64_t size, uint32_t g) { return (size + (uint64_t(1) << g) - 1) >> g; }

void SetBits(std::vector<uint8_t>& bits, uint64_t first, uint64_t last) {
  for (; first <= last && (first & 7); ++first) bits[first / 8] |= uint8_t(1u << (first & 7));
  if (first + 8 <= last + 1) {
    const uint64_t whole = (last + 1 - first) / 8;
    std::memset(&bits[first / 8], 0xff, whole);
    first += whole * 8;
  }
  for (; first <= last; ++first) bits[first / 8] |= uint8_t(1u << (first & 7));
}

// dst |= src, where each bit of src covers 2^sg bytes of a disk of `size`
// bytes and each bit of dst 2^dg: every dst bit a set src range touches.
void MergeBits(std::vector<uint8_t>& dst, uint32_t dg, const std::vector<uint8_t>& src, uint32_t sg,
               uint64_t size) {
  const uint64_t nbits = std::min<uint64_t>(src.size() * 8, BitCount(size, sg));
  for (uint64_t i = 0; i < nbits;) {
    if (!(i & 7) && !src[i / 8]) {
      i += 8;
      continue;
    }
    if (!(src[i / 8] & (1u << (i & 7)))) {
      ++i;
      continue;
    }
    uint64_t j = i + 1;
    while (j < nbits && (src[j / 8] & (1u << (j & 7)))) ++j;
    const uint64_t from = i << sg, to = std::min(size, j << sg);  // [from, to) changed
    if (from < to) SetBits(dst, from >> dg, (to - 1) >> dg);
    i = j;
  }
}

// The directory entry as stored: fixed fields, extra data, name, padding.
void AppendEntry(std::vector<uint8_t>* dir, const Slot& s, uint64_t table_offset, uint32_t table_size) {
  const BitmapDirEntry& e = s.entry;
  const size_t at = dir->size();
  dir->resize(at + ((24 + s.extra.size() + e.name.size() + 7) & ~size_t(7)), 0);
  uint8_t* p = &(*dir)[at];
  StoreBE64(p, table_offset);
  StoreBE32(p + 8, table_size);
  StoreBE32(p + 12, e.flags);
  p[16] = e.type;
  p[17] = e.granularity_bits;
  StoreBE16(p + 18, uint16_t(e.name.size()));
  StoreBE32(p + 20, uint32_t(s.extra.size()));
  if (!s.extra.empty()) std::memcpy(p + 24, s.extra.data(), s.extra.size());
  std::memcpy(p + 24 + s.extra.size(), e.name.data(), e.name.size());
}
}  // namespace

Result<DirtyBitmap> Qcow2Image::ReadBitmap(const std::string& name) {
  MutexLock l(meta_mu_);
  IMGFS_ASSIGN_OR_RETURN(auto dir, ReadBitmapDirectory());
  for (const BitmapDirEntry& e : ParseBitmapDirectory(dir, header_.nb_bitmaps)) {
    if (e.name != name) continue;
    if (e.flags & kBitmapInUse) return Inconsistent(name);
    DirtyBitmap b;
    std::vector<uint64_t> table;
    IMGFS_ASSIGN_OR_RETURN(bool ok, ReadBitmapBitsLocked(e, &b.bits, &table));
    if (!ok) return Corrupt(file_->path() + ": bitmap '" + name + "' cannot be read (damaged or outdated table)");
    b.name = name;
    b.granularity_bits = e.granularity_bits;
    b.enabled = (e.flags & kBitmapAuto) != 0;
    b.disk_size = header_.size;
    return b;
  }
  return NotFound(name);
}

Status Qcow2Image::ApplyBitmapStepLocked(std::vector<BitmapSlot>& slots, const std::string& name,
                                         const BitmapChange& step) {
  auto load = [&](Slot& s) -> Status {
    meta_mu_.AssertHeld();
    if (s.bits_loaded) return Status::OK();
    IMGFS_ASSIGN_OR_RETURN(bool ok, ReadBitmapBitsLocked(s.entry, &s.bits, &s.old_table));
    if (!ok) return Corrupt(file_->path() + ": bitmap '" + s.entry.name + "' cannot be read (damaged or outdated table)");
    s.bits_loaded = true;
    return Status::OK();
  };
  Slot* s = Find(slots, name);
  if (step.kind == BitmapChange::kAdd) {
    if (s) return InvalidArgument("Bitmap already exists: " + name);
    if (name.empty()) return InvalidArgument("Bitmap name cannot be empty");
    if (name.size() > kMaxBitmapNameSize)
      return InvalidArgument("Can't make bitmap '" + name + "' persistent in '" + file_->path() +
                             "': Name length exceeds maximum (1023 characters)");
    if (header_.version < 3)
      return InvalidArgument("Can't make bitmap '" + name + "' persistent in '" + file_->path() +
                             "': Cannot store dirty bitmaps in qcow2 v2 files");
    // An empty table would have no offset, which qemu refuses to open.
    if (VirtualSize() == 0)
      return InvalidArgument("Can't make bitmap '" + name + "' persistent in '" + file_->path() +
                             "': the disk is empty (0 bytes)");
    const uint64_t g = step.granularity ? step.granularity : std::clamp<uint64_t>(cluster_size_, 4096, 65536);
    if (g < 512 || g > (1ull << 31) || (g & (g - 1)))
      return InvalidArgument("Granularity must be power of 2 and at least 512");
    Slot n;
    n.entry.name = name;
    n.entry.type = 1;
    n.entry.flags = kBitmapAuto;
    n.entry.granularity_bits = uint8_t(__builtin_ctzll(g));
    const uint64_t bytes = (BitCount(header_.size, n.entry.granularity_bits) + 7) / 8;
    if (bytes > kMaxBitmapBytes) return InvalidArgument("the bitmap would be larger than 64 MiB; use a coarser granularity");
    if (std::count_if(slots.begin(), slots.end(), [](const Slot& x) { return !x.removed; }) >= kMaxBitmaps)
      return InvalidArgument("Can't make bitmap '" + name + "' persistent: too many bitmaps (65535 at most)");
    n.bits.assign(bytes, 0);
    n.bits_loaded = n.rewrite = true;
    slots.push_back(std::move(n));
    return Status::OK();
  }
  if (!s) return NotFound(name);
  if (step.kind == BitmapChange::kRemove) {
    s->removed = true;
    return Status::OK();
  }
  if (s->entry.flags & kBitmapInUse) return Inconsistent(name);
  switch (step.kind) {
    case BitmapChange::kEnable: s->entry.flags |= kBitmapAuto; return Status::OK();
    case BitmapChange::kDisable: s->entry.flags &= ~kBitmapAuto; return Status::OK();
    case BitmapChange::kClear:
      IMGFS_RETURN_IF_ERROR(load(*s));
      std::fill(s->bits.begin(), s->bits.end(), 0);
      s->rewrite = true;
      return Status::OK();
    default: break;
  }
  // kMerge: the source is a bitmap of this image or one handed in.
  const std::vector<uint8_t>* src_bits;
  uint32_t src_g;
  if (step.from) {
    if (step.from->disk_size != header_.size)
      return InvalidArgument("Bitmaps are of different sizes (destination size is " + std::to_string(header_.size) +
                             ", source size is " + std::to_string(step.from->disk_size) + ") and can't be merged");
    src_bits = &step.from->bits;
    src_g = step.from->granularity_bits;
  } else {
    Slot* src = Find(slots, step.source);
    if (!src) return NotFound(step.source);
    if (src->entry.flags & kBitmapInUse) return Inconsistent(step.source);
    IMGFS_RETURN_IF_ERROR(load(*src));
    src_bits = &src->bits;
    src_g = src->entry.granularity_bits;
  }
  IMGFS_RETURN_IF_ERROR(load(*s));
  if (src_bits == &s->bits) return Status::OK();  // a bitmap merged into itself
  MergeBits(s->bits, s->entry.granularity_bits, *src_bits, src_g, header_.size);
  s->rewrite = true;
  return Status::OK();
}

Result<std::vector<BitmapSlot>> Qcow2Image::LoadBitmapSlotsLocked(std::vector<uint8_t>* dir) {
  // Bitmaps held for writes reach the disk first: the directory read below
  // is then what the file holds; the next write loads them anew.
  IMGFS_RETURN_IF_ERROR(StoreTrackedBitmapsLocked());
  write_prepared_ = false;
  IMGFS_ASSIGN_OR_RETURN(*dir, ReadBitmapDirectory());
  std::vector<BitmapSlot> slots;
  for (BitmapDirEntry& e : ParseBitmapDirectory(*dir, header_.nb_bitmaps)) {
    BitmapSlot s;
    s.extra.assign(dir->begin() + long(e.pos + 24), dir->begin() + long(e.pos + 24 + e.extra_size));
    s.entry = std::move(e);
    slots.push_back(std::move(s));
  }
  return slots;
}

Status Qcow2Image::ChangeBitmap(const std::string& name, const std::vector<BitmapChange>& steps) {
  if (read_only()) return ReadOnly(file_->path() + ": " + read_only_reason_);
  MutexLock l(meta_mu_);
  std::vector<uint8_t> dir;
  IMGFS_ASSIGN_OR_RETURN(auto slots, LoadBitmapSlotsLocked(&dir));
  for (const BitmapChange& step : steps) {
    Status st = ApplyBitmapStepLocked(slots, name, step);
    if (!st.ok())
      return Status(st.code(), std::string("Operation ") + BitmapChange::Verb(step.kind) + " on bitmap " + name +
                                   " failed: " + st.message());
  }
  return StoreBitmapDirectoryLocked(slots, dir);
}

Status Qcow2Image::RemoveAllBitmapsLocked() {
  std::vector<uint8_t> dir;
  IMGFS_ASSIGN_OR_RETURN(auto slots, LoadBitmapSlotsLocked(&dir));
  for (BitmapSlot& s : slots) s.removed = true;
  return StoreBitmapDirectoryLocked(slots, dir);
}

// The new directory (and the data of the bitmaps that changed) in new
// clusters, durable; then the header cluster in one write; then the old
// clusters go.
Status Qcow2Image::StoreBitmapDirectoryLocked(std::vector<BitmapSlot>& slots, const std::vector<uint8_t>& old_dir) {
  if (header_.version < 3) return Unsupported(file_->path() + ": Cannot store dirty bitmaps in qcow2 v2 files");
  std::vector<uint8_t> dir;
  uint32_t count = 0;
  for (BitmapSlot& s : slots) {
    if (s.removed) continue;
    uint64_t table_off = s.entry.table_offset;
    uint32_t table_size = s.entry.table_size;
    if (s.rewrite) {
      IMGFS_ASSIGN_OR_RETURN(auto stored, WriteBitmapTableLocked(s.bits));
      std::tie(table_off, table_size) = stored;
    }
    AppendEntry(&dir, s, table_off, table_size);
    ++count;
  }
  if (dir.size() > kMaxBitmapDirectory) return InvalidArgument(file_->path() + ": the bitmap directory would exceed 64 MiB");
  uint64_t dir_off = 0;
  if (!dir.empty()) {
    const uint64_t clusters = (dir.size() + cluster_size_ - 1) / cluster_size_;
    IMGFS_ASSIGN_OR_RETURN(dir_off, AllocateClustersLocked(clusters));
    overlap_.Add(dir_off >> cluster_bits_, clusters, kMetaBitmapDirectory);
    std::vector<uint8_t> padded(dir);
    padded.resize(clusters * cluster_size_, 0);
    IMGFS_RETURN_IF_ERROR(file_->PWrite(dir_off, padded.data(), padded.size()));
  }
  IMGFS_RETURN_IF_ERROR(FlushMetadataLocked(false));
  IMGFS_RETURN_IF_ERROR(file_->Sync());

  // The header: the bitmaps extension in its place (after the others when
  // new, as qemu writes it), or gone with the autoclear bit when empty.
  IMGFS_ASSIGN_OR_RETURN(HeaderCluster hc, ReadHeaderClusterLocked());
  std::vector<uint8_t> ext_data(24, 0);
  StoreBE32(&ext_data[0], count);
  StoreBE64(&ext_data[8], dir.size());
  StoreBE64(&ext_data[16], dir_off);
  auto it = std::find_if(hc.exts.begin(), hc.exts.end(), [](const RawExtension& e) { return e.type == kExtBitmaps; });
  if (count && it != hc.exts.end()) it->data = ext_data;
  else if (count) hc.exts.push_back({kExtBitmaps, ext_data});
  else if (it != hc.exts.end()) hc.exts.erase(it);
  const uint64_t autoclear = count ? header_.autoclear_features | kAutoclearBitmaps
                                   : header_.autoclear_features & ~kAutoclearBitmaps;
  StoreBE64(&hc.fixed[88], autoclear);
  IMGFS_RETURN_IF_ERROR(WriteHeaderClusterLocked(hc, header_.backing_file, "the bitmaps extension"));
  const uint64_t old_dir_off = header_.bitmap_directory_offset;
  header_.autoclear_features = autoclear;
  header_.has_bitmaps_ext = count != 0;
  header_.nb_bitmaps = count;
  header_.bitmap_directory_size = dir.size();
  header_.bitmap_directory_offset = dir_off;

  // The old directory, and what it pointed at that nothing points at now.
  if (!old_dir.empty()) pending_release_.emplace_back(old_dir_off, old_dir.size());
  for (BitmapSlot& s : slots) {
    if (!s.removed && !s.rewrite) continue;
    if (!s.entry.table_size) continue;
    if (s.old_table.empty()) {
      auto ok = ReadBitmapTableLocked(s.entry, &s.old_table);
      if (!ok.ok() || !ok.value()) continue;  // damaged: its clusters leak rather than risk a wrong release
    }
    ReleaseBitmapTableLocked(s.old_table, s.entry.table_offset);
  }
  return FlushMetadataLocked(/*apply_releases=*/true);
}

}  // namespace imgfs::qcow2
