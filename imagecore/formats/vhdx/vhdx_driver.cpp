// vhdx (Hyper-V): recognised by its file type identifier, not served yet.
#include <cstring>

#include "formats/vhdx/vhdx_driver.h"

namespace imgfs::vhdx {
namespace {

int Probe(const io::File&, const uint8_t* head, size_t len) {
  return len >= 8 && !std::memcmp(head, "vhdxfile", 8) ? 100 : 0;
}

}  // namespace

const FormatDriver kDriver = {.name = "vhdx", .probe = Probe};

}  // namespace imgfs::vhdx
