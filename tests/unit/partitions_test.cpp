// Partition tables from hostile disks: loops, sizes past the end, absurd
// GPT arrays. The parser must stop, cut or refuse, never run away.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "imagecore/partitions.h"

namespace imgfs {
namespace {

void Put32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = uint8_t(v >> (8 * i));
}
void Entry(std::vector<uint8_t>& d, uint64_t sector, int slot, uint8_t type, uint32_t start, uint32_t count) {
  uint8_t* e = &d[sector * 512 + 446 + slot * 16];
  e[4] = type;
  Put32(e + 8, start);
  Put32(e + 12, count);
  d[sector * 512 + 510] = 0x55;
  d[sector * 512 + 511] = 0xaa;
}
Result<std::vector<Partition>> Parse(const std::vector<uint8_t>& d) {
  return ReadPartitionTable(
      [&](uint64_t off, void* buf, size_t len) {
        std::memset(buf, 0, len);
        if (off < d.size()) std::memcpy(buf, &d[off], std::min<uint64_t>(len, d.size() - off));
        return Status::OK();
      },
      d.size());
}

TEST(Partitions, NoSignatureNoPartitions) {
  std::vector<uint8_t> d(1 << 20, 0);
  auto p = Parse(d);
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->empty());
}

TEST(Partitions, PrimaryCutAtTheEndOfTheDisk) {
  std::vector<uint8_t> d(1 << 20, 0);  // 2048 sectors
  Entry(d, 0, 0, 0x83, 100, 10);
  Entry(d, 0, 1, 0x83, 2000, 500);   // runs past the end: cut
  Entry(d, 0, 2, 0x83, 5000, 10);    // starts past the end: left out
  auto p = Parse(d);
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->size(), 2u);
  EXPECT_EQ((*p)[0].offset, 100u * 512);
  EXPECT_EQ((*p)[1].number, 2u);
  EXPECT_EQ((*p)[1].length, 48u * 512);
}

TEST(Partitions, LogicalChainThatLoopsStops) {
  std::vector<uint8_t> d(1 << 20, 0);
  Entry(d, 0, 0, 0x05, 100, 1000);          // extended
  Entry(d, 100, 0, 0x83, 10, 20);           // logical 5
  Entry(d, 100, 1, 0x05, 200, 100);         // next EBR at 100+200
  Entry(d, 300, 0, 0x83, 10, 20);           // logical 6
  Entry(d, 300, 1, 0x05, 0 + 200, 100);     // points back at itself (100 + 200): a loop
  auto p = Parse(d);
  ASSERT_TRUE(p.ok());
  ASSERT_EQ(p->size(), 2u);
  EXPECT_EQ((*p)[0].number, 5u);
  EXPECT_EQ((*p)[0].offset, 110u * 512);
  EXPECT_EQ((*p)[1].number, 6u);
  EXPECT_EQ((*p)[1].offset, 310u * 512);
}

TEST(Partitions, AbsurdGptArrayIsRefused) {
  std::vector<uint8_t> d(1 << 20, 0);
  Entry(d, 0, 0, 0xee, 1, 2047);
  std::memcpy(&d[512], "EFI PART", 8);
  Put32(&d[512 + 72], 2);
  Put32(&d[512 + 80], 1000000);  // entries
  Put32(&d[512 + 84], 128);
  EXPECT_FALSE(Parse(d).ok());
}

}  // namespace
}  // namespace imgfs
