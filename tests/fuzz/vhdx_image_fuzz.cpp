// Fuzz target: VHDX images (file identifier, both headers, the region
// table, the metadata table and items with the parent locator, the BAT and
// sector bitmaps, and the log's replay), the input as sparse records (see
// fuzz::SparseFileFrom): its structures lie megabytes apart. What opens is
// walked as a reader would, then opened writable (the log replayed into
// the file) and written: allocation, sector bitmaps, zeroing, the log.
#include <cstdint>

#include "formats/vhdx/vhdx_image.h"
#include "fuzz_util.h"
#include "image_walk.h"

using namespace imgfs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInput) return 0;
  fuzz::QuietLogs();
  auto img = vhdx::VhdxImage::Open(fuzz::SparseFileFrom(data, size), OpenOptions(false));
  if (!img.ok()) return 0;
  fuzz::WalkForReading(*img.value());
  auto w = vhdx::VhdxImage::Open(fuzz::SparseFileFrom(data, size), OpenOptions(true));
  if (!w.ok()) return 0;
  fuzz::WalkForWriting(*w.value());
  return 0;
}
