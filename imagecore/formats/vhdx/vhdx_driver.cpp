// vhdx (Hyper-V): dynamic, fixed and differencing disks, read-only so far.
#include "formats/vhdx/vhdx_driver.h"

#include <cstring>

#include "formats/vhdx/vhdx_image.h"

namespace imgfs::vhdx {
namespace {

int Probe(const io::File&, const uint8_t* head, size_t len) {
  return len >= 8 && !std::memcmp(head, "vhdxfile", 8) ? 100 : 0;
}

}  // namespace

const FormatDriver kDriver = {
    .name = "vhdx",
    .probe = Probe,
    .open = VhdxImage::Open,
    .caps = {.backing = true},
};

}  // namespace imgfs::vhdx
