// CRC-32C (Castagnoli), as VHDX checksums its headers, region tables,
// metadata and log entries. Debian packages no library for it; the CPU's
// crc32 instruction does it where there is one (SSE4.2), a table elsewhere.
#pragma once

#include <cstddef>
#include <cstdint>

namespace imgfs {

// The CRC-32C of `n` bytes, continuing `crc` (the result of an earlier
// call over the bytes before them; 0 to start).
uint32_t Crc32c(const void* data, size_t n, uint32_t crc = 0);

namespace crc32c_detail {
// Both ways, for tests that they agree.
uint32_t ByTable(const void* data, size_t n, uint32_t crc);
uint32_t ByInstruction(const void* data, size_t n, uint32_t crc);
bool HasInstruction();
}  // namespace crc32c_detail

}  // namespace imgfs
