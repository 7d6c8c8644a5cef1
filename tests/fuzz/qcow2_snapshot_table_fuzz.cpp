// Fuzz target: the qcow2 snapshot table. The input is
//   u8 cluster_bits - 9 (mod 8) | u32 nb_snapshots | u64 virtual size | table
// (big endian); the table goes into a small valid image made in code, so
// every input reaches the table parser. Then what a user does with
// snapshots: list, check, and on a writable copy create, delete and apply.
#include <cstdint>

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
  spec.nb_snapshots = uint32_t(in.Take(4));
  spec.size = in.Take(8) % (64ull << 20);  // the L1 table must fit before the payload
  if (spec.nb_snapshots == 0) spec.nb_snapshots = 1;
  for (bool writable : {false, true}) {
    auto file = io::NewMemFile("/nonexistent-imgfs-fuzz/snapshots.qcow2");
    if (!fuzz::WriteQcow2Around(*file, spec, in.rest(), in.rest_size()).ok()) __builtin_trap();
    auto img = fuzz::OpenQcow2(std::move(file), writable);
    if (!img) return 0;
    if (!writable) {
      fuzz::WalkForReading(*img);
      continue;
    }
    const auto snaps = img->Snapshots();
    (void)img->CreateSnapshot("fuzz");
    if (!snaps.empty()) {
      (void)img->ApplySnapshot(snaps.front().id);
      (void)img->DeleteSnapshot(snaps.back().id);
    }
    (void)img->Check(RepairMode::kAll);
  }
  return 0;
}
