// vpc (Virtual PC's VHD): recognised by its footer, not served yet. A
// dynamic disk copies the footer to its start; a fixed one has it only in
// its last 512 bytes.
#include <cstring>

#include "formats/vpc/vpc_driver.h"

namespace imgfs::vpc {
namespace {

constexpr char kCookie[] = "conectix";

int Probe(const io::File& file, const uint8_t* head, size_t len) {
  if (len >= 8 && !std::memcmp(head, kCookie, 8)) return 100;
  const uint64_t size = file.Size();
  uint8_t tail[8];
  if (size >= 512 && file.PRead(size - 512, tail, sizeof tail).ok() && !std::memcmp(tail, kCookie, 8)) return 100;
  return 0;
}

}  // namespace

const FormatDriver kDriver = {.name = "vpc", .probe = Probe};

}  // namespace imgfs::vpc
