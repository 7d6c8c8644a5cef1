// Partition tables on a guest disk: MBR (primary, and logical partitions
// in an extended one) and GPT, so each partition can be served as a file.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "imagecore/status.h"

namespace imgfs {

struct Partition {
  unsigned number = 0;  // as Linux numbers them: MBR 1-4 primary, 5+ logical; GPT entry index + 1
  uint64_t offset = 0;  // bytes from the start of the disk
  uint64_t length = 0;  // bytes
  std::string type;     // "mbr:0x83", "gpt:0fc63daf-8483-4772-8e79-3d69d8477de4"
};

// Reads `len` guest bytes at `off`.
using DiskReader = std::function<Status(uint64_t off, void* buf, size_t len)>;

// The partitions of a disk of `disk_size` bytes with 512-byte sectors, in
// number order. A disk without a table has none. Entries that point past
// the end of the disk are cut at it or, if they start past it, left out.
Result<std::vector<Partition>> ReadPartitionTable(const DiskReader& read, uint64_t disk_size);

}  // namespace imgfs
