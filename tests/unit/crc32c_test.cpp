// CRC-32C against published vectors (RFC 3720's iSCSI examples and the
// usual "123456789" check value), both ways of computing it agreeing.
#include "base/crc32c.h"

#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <vector>

namespace imgfs {
namespace {

struct Vector {
  std::vector<uint8_t> data;
  uint32_t crc;
};

std::vector<Vector> Known() {
  std::vector<Vector> v;
  const char* check = "123456789";
  v.push_back({std::vector<uint8_t>(check, check + 9), 0xe3069283});
  v.push_back({std::vector<uint8_t>(32, 0x00), 0x8a9136aa});
  v.push_back({std::vector<uint8_t>(32, 0xff), 0x62a8ab43});
  std::vector<uint8_t> up(32), down(32);
  for (int i = 0; i < 32; ++i) {
    up[i] = uint8_t(i);
    down[i] = uint8_t(31 - i);
  }
  v.push_back({up, 0x46dd794e});
  v.push_back({down, 0x113fdb5c});
  v.push_back({{}, 0});
  return v;
}

TEST(Crc32c, KnownVectors) {
  for (const Vector& v : Known()) {
    EXPECT_EQ(Crc32c(v.data.data(), v.data.size()), v.crc);
    EXPECT_EQ(crc32c_detail::ByTable(v.data.data(), v.data.size(), 0), v.crc);
    EXPECT_EQ(crc32c_detail::ByInstruction(v.data.data(), v.data.size(), 0), v.crc);
  }
}

TEST(Crc32c, ContinuesAcrossPieces) {
  const char* check = "123456789";
  for (size_t cut = 0; cut <= 9; ++cut)
    EXPECT_EQ(Crc32c(check + cut, 9 - cut, Crc32c(check, cut)), 0xe3069283u) << cut;
}

TEST(Crc32c, TableAndInstructionAgreeAtEveryLengthAndAlignment) {
  if (!crc32c_detail::HasInstruction()) GTEST_SKIP() << "this CPU has no crc32 instruction (SSE4.2)";
  std::mt19937 rng(7);
  std::vector<uint8_t> buf(4096 + 16);
  for (auto& b : buf) b = uint8_t(rng());
  for (size_t align = 0; align < 8; ++align)
    for (size_t n : {0, 1, 7, 8, 9, 15, 16, 63, 64, 65, 511, 4096})
      EXPECT_EQ(crc32c_detail::ByTable(buf.data() + align, n, 0x1234),
                crc32c_detail::ByInstruction(buf.data() + align, n, 0x1234))
          << align << " " << n;
}

}  // namespace
}  // namespace imgfs
