#include <gtest/gtest.h>

#include "imagecore/size.h"

namespace imgfs {
namespace {

TEST(ParseSize, SuffixesAsQemuImg) {
  EXPECT_EQ(ParseSize("4096").value(), 4096u);
  EXPECT_EQ(ParseSize("64k").value(), 65536u);
  EXPECT_EQ(ParseSize("64K").value(), 65536u);
  EXPECT_EQ(ParseSize("1M").value(), 1u << 20);
  EXPECT_EQ(ParseSize("1G").value(), 1ull << 30);
  EXPECT_EQ(ParseSize("2T").value(), 2ull << 40);
  EXPECT_EQ(ParseSize("1P").value(), 1ull << 50);
  EXPECT_EQ(ParseSize("1E").value(), 1ull << 60);
  EXPECT_EQ(ParseSize("1.5k").value(), 1536u);
  EXPECT_EQ(ParseSize("512b").value(), 512u);
}

TEST(ParseSize, RejectsNonsense) {
  for (const char* bad : {"", "-1", "1Q", "abc", "1.3b", "1kk", "+5", "20E"})
    EXPECT_FALSE(ParseSize(bad).ok()) << bad;
}

TEST(HumanSize, ThreeSignificantDigits) {
  EXPECT_EQ(HumanSize(0), "0 B");
  EXPECT_EQ(HumanSize(200704), "196 KiB");
  EXPECT_EQ(HumanSize(1ull << 30), "1 GiB");
  EXPECT_EQ(HumanSize(1536ull << 20), "1.5 GiB");
}

}  // namespace
}  // namespace imgfs
