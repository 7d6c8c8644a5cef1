// Fuzz target: the qcow2 header and its extensions (Header::Read), with the
// input as the whole file. A header that decodes must encode and decode
// again to the same fields.
#include <cstdint>
#include <cstring>

#include "formats/qcow2/qcow2_format.h"
#include "fuzz_util.h"

using namespace imgfs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInput) return 0;
  fuzz::QuietLogs();
  auto file = fuzz::MemFileWith(data, size);
  auto h = qcow2::Header::Read(*file);
  if (!h.ok()) return 0;
  // Round trip of the fixed part: what we would write back reads the same.
  std::vector<uint8_t> fixed = h->EncodeFixed();
  auto again_file = fuzz::MemFileWith(data, size);
  if (!again_file->PWrite(0, fixed.data(), fixed.size()).ok()) __builtin_trap();
  auto again = qcow2::Header::Read(*again_file);
  if (!again.ok() || again->size != h->size || again->l1_table_offset != h->l1_table_offset ||
      again->incompatible_features != h->incompatible_features || again->cluster_bits != h->cluster_bits)
    __builtin_trap();
  return 0;
}
