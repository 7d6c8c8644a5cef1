// Fuzz target: the VMDK text descriptor parser, the input as the text. A
// descriptor that parses keeps to the parser's bounds.
#include <cstdint>
#include <string_view>

#include "formats/vmdk/vmdk_descriptor.h"
#include "fuzz_util.h"

using namespace imgfs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInput) return 0;
  fuzz::QuietLogs();
  auto d = vmdk::ParseDescriptor(std::string_view(reinterpret_cast<const char*>(data), size));
  if (!d.ok()) return 0;
  if (d->extents.size() > vmdk::kMaxExtents || d->version < 1 || d->version > 3 || d->create_type.empty())
    __builtin_trap();
  for (const auto& e : d->extents)
    if (e.sectors == 0 || e.type.empty() || (e.type != "ZERO" && !e.has_file)) __builtin_trap();
  return 0;
}
