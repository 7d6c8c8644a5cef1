// Fuzz target: the qcow2 bitmap directory, its bitmap tables and data. The
// input is
//   u8 cluster_bits - 9 (mod 8) | u32 nb_bitmaps | u64 virtual size
//   | u64 directory size | blob
// (big endian); the blob goes into a small valid image made in code, with
// the directory at its start, so that offsets into the blob reach the
// bitmaps' tables. ParseBitmapDirectory reads the blob directly, then the
// image reads it as info, a check, a first write (bitmaps loaded and
// marked in use), a resize, the bitmap subcommand's steps, amend and a
// clean close (bitmaps stored) do.
#include <cstdint>
#include <vector>

#include "formats/qcow2/qcow2_format.h"
#include "fuzz_util.h"
#include "image_walk.h"
#include "qcow2_builder.h"

using namespace imgfs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInput) return 0;
  fuzz::QuietLogs();
  fuzz::Fields in(data, size);
  fuzz::SyntheticQcow2 spec;
  spec.cluster_bits = 9 + uint32_t(in.Take(1) % 8);
  spec.bitmaps = true;
  spec.nb_bitmaps = uint32_t(in.Take(4));
  spec.size = in.Take(8) % (64ull << 20);
  // Past the blob the directory reads zeros; a few KiB of them is enough,
  // and keeps a huge stated size from costing a large allocation per run.
  spec.bitmap_directory_size = std::min<uint64_t>(in.Take(8), in.rest_size() + 4096);

  std::vector<uint8_t> dir(in.rest(), in.rest() + std::min<uint64_t>(in.rest_size(), spec.bitmap_directory_size));
  for (const qcow2::BitmapDirEntry& e : qcow2::ParseBitmapDirectory(dir))
    if (e.pos + 24 + e.extra_size + e.name.size() > dir.size()) __builtin_trap();  // entry outside the directory

  for (bool writable : {false, true}) {
    auto file = io::NewMemFile("/nonexistent-imgfs-fuzz/bitmaps.qcow2");
    if (!fuzz::WriteQcow2Around(*file, spec, in.rest(), in.rest_size()).ok()) __builtin_trap();
    auto img = fuzz::OpenQcow2(std::move(file), writable);
    if (!img) return 0;
    if (!writable) {
      (void)img->Info();
      (void)img->Check(RepairMode::kNone);
      continue;
    }
    fuzz::WalkForWriting(*img);
    (void)img->Resize(img->VirtualSize() + (1 << 20), nullptr);
    fuzz::WalkForChanging(*img);
  }
  return 0;
}
