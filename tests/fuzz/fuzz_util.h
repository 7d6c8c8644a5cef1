// Small helpers shared by the fuzz targets.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "imagecore/file.h"

namespace imgfs::fuzz {

// Inputs larger than this are skipped: big inputs only slow the fuzzer.
constexpr size_t kMaxInput = 1 << 20;
// Memory files of the targets stop growing here (writes past it: no space).
constexpr uint64_t kMaxFileBytes = 64ull << 20;

// Drops imagecore's log lines (damage found, repairs): at thousands of
// inputs a second they would drown the fuzzer's own output.
void QuietLogs();

// A memory file holding `data`. Its path lies under a directory that does
// not exist, so a relative name the image stores (an external data file)
// can never reach a host file.
std::unique_ptr<io::File> MemFileWith(const uint8_t* data, size_t size);

// A sparse memory file from `data` read as records, each a 4-byte
// little-endian file offset, a 2-byte length and that many bytes laid at
// the offset (later records win); what no record covers reads as zeros.
// Offsets past kMaxFileBytes are dropped. For formats whose structures lie
// megabytes apart (VHDX), where a whole file would make inputs too big.
std::unique_ptr<io::File> SparseFileFrom(const uint8_t* data, size_t size);

// Reads big-endian fields from the front of an input, zeros once it is
// used up, so that every input decodes to some parameters.
class Fields {
 public:
  Fields(const uint8_t* data, size_t size) : p_(data), left_(size) {}
  uint64_t Take(size_t bytes);
  const uint8_t* rest() const { return p_; }
  size_t rest_size() const { return left_; }

 private:
  const uint8_t* p_;
  size_t left_;
};

}  // namespace imgfs::fuzz
