#include "image_walk.h"

#include <algorithm>
#include <cstdint>
#include <vector>

namespace imgfs::fuzz {

namespace {
constexpr int kMaxExtents = 256;
constexpr uint64_t kMaxReadBytes = 1 << 20;  // per walk
constexpr size_t kChunk = 64 << 10;
}  // namespace

std::unique_ptr<Image> OpenQcow2(std::unique_ptr<io::File> file, bool writable) {
  const FormatDriver* qcow2 = FindFormat("qcow2");
  if (!qcow2) __builtin_trap();  // the registry itself is broken
  OpenOptions opts;
  opts.writable = writable;
  auto img = qcow2->open(std::move(file), opts);
  return img.ok() ? std::move(img).value() : nullptr;
}

void WalkForReading(Image& img) {
  (void)img.Info();
  (void)img.Snapshots();
  (void)img.Backing();
  const uint64_t size = img.VirtualSize();
  std::vector<uint8_t> buf(kChunk);
  uint64_t read = 0, off = 0;
  for (int i = 0; i < kMaxExtents && off < size; ++i) {
    Extent e;
    if (!img.BlockStatus(off, size - off, &e).ok() || e.length == 0 || e.length > size - off) break;
    // Read the front of the run as the chain would: verbatim bytes from
    // the file named, everything else through the driver.
    const size_t n = size_t(std::min<uint64_t>({e.length, kChunk, kMaxReadBytes - read}));
    if (n) {
      if (e.kind == ExtentKind::kData && e.file) (void)e.file->PRead(e.host_offset, buf.data(), n);
      else (void)img.ReadOpaque(off, buf.data(), n);
      read += n;
    }
    off += e.length;
  }
  // One read across a cluster boundary, and one at the very end.
  if (size) {
    (void)img.ReadOpaque(std::min<uint64_t>(size - 1, 65536 - 100), buf.data(), 200);
    (void)img.ReadOpaque(size - 1, buf.data(), 1);
  }
  (void)img.Check(RepairMode::kNone);
}

void WalkForWriting(Image& img) {
  (void)img.Check(RepairMode::kAll);
  const uint64_t size = img.VirtualSize();
  if (size == 0 || img.read_only()) return;
  std::vector<uint8_t> buf(8192, 0xa5);
  (void)img.Write(0, buf.data(), size_t(std::min<uint64_t>(size, 4096)), nullptr);
  const uint64_t mid = size / 2;  // an unaligned run across clusters, inside the disk
  (void)img.Write(mid, buf.data(), size_t(std::min<uint64_t>(size - mid, 5000)), nullptr);
  (void)img.Write(size - 1, buf.data(), 1, nullptr);
  (void)img.WriteZeroes(0, std::min<uint64_t>(size, 65536), true, nullptr);
  (void)img.Flush();
}

void WalkForChanging(Image& img) {
  if (img.read_only()) return;
  const ImageInfo info = img.Info();
  if (!info.bitmaps.empty()) {
    const std::string first = info.bitmaps.front().name;
    (void)img.ReadBitmap(first);
    BitmapChange add, merge, clear, remove;
    add.kind = BitmapChange::kAdd;
    merge.kind = BitmapChange::kMerge;
    merge.source = first;
    clear.kind = BitmapChange::kClear;
    remove.kind = BitmapChange::kRemove;
    (void)img.ChangeBitmap("imgfs-fuzz", {add, merge});
    (void)img.ChangeBitmap(first, {clear});
    (void)img.ChangeBitmap(first, {remove});
  }
  const uint64_t size = img.VirtualSize();
  if (size < (1ull << 40) && img.Resize(size + (1 << 20), nullptr).ok())
    (void)img.Preallocate(size, 1 << 20, Prealloc::kMetadata);
  (void)img.Amend({{"refcount_bits", "8"}});
  (void)img.Amend({{"compat", "0.10"}});
  (void)img.Amend({{"compat", "1.1"}});
  (void)img.Flush();
}

}  // namespace imgfs::fuzz
