// Fuzz target: the mounted image's control requests: a line written to
// ctl (ParseCtlLine) and, split at the first '=', a control attribute
// write (ParseControlAttribute). A command that parses keeps the text given.
#include <cstdint>
#include <string>

#include "control.h"
#include "fuzz_util.h"

using namespace imgfs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  const std::string text(reinterpret_cast<const char*>(data), size);
  auto c = fs::ParseCtlLine(text);
  if (c.ok() && c->text != text) __builtin_trap();
  const auto eq = text.find('=');
  if (eq != std::string::npos) {
    auto a = fs::ParseControlAttribute(text.substr(0, eq), text.substr(eq + 1));
    if (a.ok() && a->text != text) __builtin_trap();
  }
  return 0;
}
