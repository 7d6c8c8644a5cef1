#include "imagecore/size.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

namespace imgfs {

Result<uint64_t> ParseSize(const std::string& text) {
  auto bad = [&] { return InvalidArgument("invalid size '" + text + "'"); };
  if (text.empty() || text[0] == '-' || text[0] == '+') return bad();
  char* end = nullptr;
  errno = 0;
  double num = std::strtod(text.c_str(), &end);
  if (end == text.c_str() || errno != 0 || num < 0) return bad();
  std::string suffix(end);
  int shift = 0;
  if (suffix.size() > 1) return bad();
  if (!suffix.empty()) {
    switch (suffix[0]) {
      case 'b': case 'B': shift = 0; break;
      case 'k': case 'K': shift = 10; break;
      case 'm': case 'M': shift = 20; break;
      case 'g': case 'G': shift = 30; break;
      case 't': case 'T': shift = 40; break;
      case 'p': case 'P': shift = 50; break;
      case 'e': case 'E': shift = 60; break;
      default: return bad();
    }
  }
  double bytes = std::ldexp(num, shift);
  if (bytes >= 18446744073709551615.0) return InvalidArgument("size '" + text + "' is too large");
  if (bytes != std::floor(bytes)) return InvalidArgument("size '" + text + "' is not a whole number of bytes");
  return static_cast<uint64_t>(bytes);
}

std::string HumanSize(uint64_t bytes) {
  static const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) {
    v /= 1024;
    ++u;
  }
  char buf[64];
  std::snprintf(buf, sizeof buf, "%0.3g %s", v, kUnits[u]);
  return buf;
}

}  // namespace imgfs
