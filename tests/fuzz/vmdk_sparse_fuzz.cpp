// Fuzz target: sparse VMDK extents (hosted "KDMV" with its embedded
// descriptor, grain directory and tables, compressed grains and the stream
// footer; ESX's COWD; seSparse), the input as the whole extent file. What
// opens is walked as a reader would (block status, reads, info), then as a
// writer (writes, zeroing, growth).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "formats/vmdk/vmdk_image.h"
#include "formats/vmdk/vmdk_sparse.h"
#include "fuzz_util.h"
#include "image_walk.h"

using namespace imgfs;

namespace {
// An extent that opened: the first runs of its map, and reads of them.
void WalkExtent(vmdk::DiskExtent& e) {
  (void)e.Info();
  std::vector<uint8_t> buf(64 << 10);
  uint64_t off = 0;
  for (int i = 0; i < 256 && off < e.bytes(); ++i) {
    Extent run;
    if (!e.Map(off, e.bytes() - off, &run).ok()) return;
    if (run.length == 0 || run.length > e.bytes() - off) __builtin_trap();
    (void)e.ReadOpaque(off, buf.data(), size_t(std::min<uint64_t>(run.length, buf.size())));
    off += run.length;
  }
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInput) return 0;
  fuzz::QuietLogs();
  auto file = fuzz::MemFileWith(data, size);
  if (vmdk::IsCowd(data, size) || vmdk::IsSeSparse(data, size)) {
    auto e = vmdk::IsCowd(data, size) ? vmdk::OpenCowd(std::move(file), "fuzz") : vmdk::OpenSeSparse(std::move(file), "fuzz");
    if (e.ok()) WalkExtent(*e.value());
    return 0;
  }
  auto img = vmdk::VmdkImage::Open(std::move(file), OpenOptions(false));
  if (!img.ok()) return 0;
  fuzz::WalkForReading(*img.value());
  // The same bytes opened for writing: allocation, zeroing, the CID
  // rewrite of the embedded descriptor, growth, and the flush at close.
  auto w = vmdk::VmdkImage::Open(fuzz::MemFileWith(data, size), OpenOptions(true));
  if (!w.ok()) return 0;
  fuzz::WalkForWriting(*w.value());
  const uint64_t vsize = w.value()->VirtualSize();
  if (!w.value()->read_only() && vsize < (uint64_t(1) << 32)) (void)w.value()->Resize(vsize + (1 << 20), nullptr);
  return 0;
}
