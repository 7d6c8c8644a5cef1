#include "base/crc32c.h"

#include <array>
#include <cstring>

#include "base/endian.h"

#if defined(__x86_64__)
#include <nmmintrin.h>
#endif

namespace imgfs {
namespace crc32c_detail {
namespace {

constexpr uint32_t kPoly = 0x82f63b78;  // 0x1edc6f41, bits reversed

// Eight tables: eight bytes per step (slicing by 8).
using Tables = std::array<std::array<uint32_t, 256>, 8>;
constexpr Tables MakeTables() {
  Tables t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c >> 1) ^ ((c & 1) ? kPoly : 0);
    t[0][i] = c;
  }
  for (int s = 1; s < 8; ++s)
    for (uint32_t i = 0; i < 256; ++i) t[s][i] = (t[s - 1][i] >> 8) ^ t[0][t[s - 1][i] & 0xff];
  return t;
}
constexpr Tables kTables = MakeTables();

}  // namespace

uint32_t ByTable(const void* data, size_t n, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint32_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    const uint32_t lo = LoadLE32(p) ^ c, hi = LoadLE32(p + 4);
    c = kTables[7][lo & 0xff] ^ kTables[6][(lo >> 8) & 0xff] ^ kTables[5][(lo >> 16) & 0xff] ^ kTables[4][lo >> 24] ^
        kTables[3][hi & 0xff] ^ kTables[2][(hi >> 8) & 0xff] ^ kTables[1][(hi >> 16) & 0xff] ^ kTables[0][hi >> 24];
  }
  for (; n; --n, ++p) c = (c >> 8) ^ kTables[0][(c ^ *p) & 0xff];
  return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) uint32_t ByInstruction(const void* data, size_t n, uint32_t crc) {
  const auto* p = static_cast<const uint8_t*>(data);
  uint64_t c = ~crc;
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    c = _mm_crc32_u64(c, v);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; n; --n, ++p) c32 = _mm_crc32_u8(c32, *p);
  return ~c32;
}
bool HasInstruction() { return __builtin_cpu_supports("sse4.2"); }
#else
uint32_t ByInstruction(const void* data, size_t n, uint32_t crc) { return ByTable(data, n, crc); }
bool HasInstruction() { return false; }
#endif

}  // namespace crc32c_detail

uint32_t Crc32c(const void* data, size_t n, uint32_t crc) {
  static const bool hw = crc32c_detail::HasInstruction();
  return hw ? crc32c_detail::ByInstruction(data, n, crc) : crc32c_detail::ByTable(data, n, crc);
}

}  // namespace imgfs
