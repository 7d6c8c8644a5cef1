// vhdx (Hyper-V): dynamic, fixed and differencing disks.
#include "formats/vhdx/vhdx_driver.h"

#include <cstring>

#include "formats/vhdx/vhdx_create.h"
#include "formats/vhdx/vhdx_image.h"

namespace imgfs::vhdx {
namespace {

int Probe(const io::File&, const uint8_t* head, size_t len) {
  return len >= 8 && !std::memcmp(head, "vhdxfile", 8) ? 100 : 0;
}

constexpr const char* kCreateOptions =
    "  subformat=<str>        - dynamic (default) or fixed\n"
    "  block_size=<size>      - 1M to 256M, a power of two (default: 8M to 64M by the disk's size; with -b, the parent's)\n"
    "  log_size=<size>        - the log, whole MiB (default 1M)\n"
    "  block_state_zero=<bool> - new blocks are ZERO rather than NOT_PRESENT (default on, as qemu-img)\n";

}  // namespace

const FormatDriver kDriver = {
    .name = "vhdx",
    .probe = Probe,
    .open = VhdxImage::Open,
    .create = CreateImage,
    .create_options = kCreateOptions,
    .caps = {.backing = true, .change_backing = true, .resize = true, .create_reads_parent = true},
};

}  // namespace imgfs::vhdx
