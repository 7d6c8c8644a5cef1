// Fuzz target: sizes as the CLI and ctl take them (ParseSize), and their
// human rendering. A size that parses reads back the same from its
// decimal form.
#include <cstdint>
#include <string>

#include "fuzz_util.h"
#include "imagecore/size.h"

using namespace imgfs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  auto v = ParseSize(std::string(reinterpret_cast<const char*>(data), size));
  if (!v.ok()) return 0;
  (void)HumanSize(v.value());
  auto again = ParseSize(std::to_string(v.value()));
  if (!again.ok() || again.value() != v.value()) __builtin_trap();
  return 0;
}
