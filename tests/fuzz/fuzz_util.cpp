#include "fuzz_util.h"

#include "imagecore/log.h"

namespace imgfs::fuzz {

void QuietLogs() {
  static const bool once = [] {
    SetLogSink([](LogLevel, const std::string&) {});
    return true;
  }();
  (void)once;
}

std::unique_ptr<io::File> MemFileWith(const uint8_t* data, size_t size) {
  auto f = io::NewMemFile("/nonexistent-imgfs-fuzz/image.qcow2");
  if (size) (void)f->PWrite(0, data, size);  // a memory file cannot fail
  return f;
}

uint64_t Fields::Take(size_t bytes) {
  uint64_t v = 0;
  for (size_t i = 0; i < bytes; ++i) {
    v <<= 8;
    if (left_) {
      v |= *p_++;
      --left_;
    }
  }
  return v;
}

}  // namespace imgfs::fuzz
