// Fuzz target: MBR (with extended partitions) and GPT tables. The input is
//   u64 disk size (little endian) | the disk's first bytes
// so that tables may point past the bytes given; the rest of the disk, and
// past its end, reads as zeros (as Chain::Read does). Every partition found
// must lie inside the disk.
#include <cstdint>
#include <cstring>

#include "fuzz_util.h"
#include "imagecore/partitions.h"

using namespace imgfs;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > fuzz::kMaxInput || size < 8) return 0;
  uint64_t disk_size = 0;
  for (int i = 7; i >= 0; --i) disk_size = disk_size << 8 | data[i];
  disk_size &= (1ull << 50) - 1;  // a PiB: large, and no overflow in sectors * 512
  const uint8_t* disk = data + 8;
  const size_t have = size - 8;
  DiskReader read = [&](uint64_t off, void* buf, size_t len) -> Status {
    if (len == 0) return Status::OK();  // buf may be null
    std::memset(buf, 0, len);
    if (off < have) std::memcpy(buf, disk + off, std::min<uint64_t>(len, have - off));
    return Status::OK();
  };
  auto parts = ReadPartitionTable(read, disk_size);
  if (!parts.ok()) return 0;
  for (const Partition& p : parts.value())
    if (p.length == 0 || p.offset > disk_size || p.length > disk_size - p.offset) __builtin_trap();
  return 0;
}
