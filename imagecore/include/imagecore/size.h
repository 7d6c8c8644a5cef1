// Sizes as qemu-img writes and reads them.
#pragma once

#include <cstdint>
#include <string>

#include "imagecore/status.h"

namespace imgfs {

// "1G", "512M", "1.5k", "4096", "10b": binary suffixes k M G T P E
// (either case), as qemu-img takes them.
Result<uint64_t> ParseSize(const std::string& text);
// "1 GiB", "196 KiB", "512 B": three significant digits, as qemu-img prints.
std::string HumanSize(uint64_t bytes);

}  // namespace imgfs
