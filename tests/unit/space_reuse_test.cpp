// Freed clusters are reused, but never under a read that may still use
// them; and no write lands on metadata (the overlap check).
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "base/endian.h"
#include "imagecore/read_epoch.h"
#include "test_util.h"

namespace imgfs {
namespace {

constexpr uint64_t kCluster = 64 << 10;

// Writes clusters [0, n) with `fill`, then discards them, and flushes: the
// clusters are free once the flush made the new pointers durable.
void WriteThenDiscard(Image& img, uint64_t n, uint8_t fill) {
  std::vector<uint8_t> d(n * kCluster, fill);
  ASSERT_TRUE(img.Write(0, d.data(), d.size(), nullptr).ok());
  ASSERT_TRUE(img.Flush().ok());
  ASSERT_TRUE(img.WriteZeroes(0, d.size(), /*unmap=*/true, nullptr).ok());
  ASSERT_TRUE(img.Flush().ok());
}

TEST(SpaceReuse, FreedClustersAreReusedBeforeTheFileGrows) {
  auto f = test::NewQcow2(16 << 20);
  auto img = test::OpenShared(f, true);
  ASSERT_TRUE(img);
  WriteThenDiscard(*img, 32, 0x11);
  const uint64_t size = f->Size();
  for (int round = 0; round < 5; ++round) WriteThenDiscard(*img, 32, uint8_t(0x20 + round));
  EXPECT_EQ(f->Size(), size) << "rewriting what was discarded grew the file";
  img.reset();
  uint64_t leaks = 1;
  EXPECT_EQ(test::CheckQcow2(*f, &leaks, true), "");
  EXPECT_EQ(leaks, 0u);
}

TEST(SpaceReuse, NoReuseUnderAReadThatStartedBeforeTheFree) {
  auto f = test::NewQcow2(16 << 20);
  auto img = test::OpenShared(f, true);
  ASSERT_TRUE(img);
  std::vector<uint8_t> d(8 * kCluster, 0x33);
  ASSERT_TRUE(img->Write(0, d.data(), d.size(), nullptr).ok());
  ASSERT_TRUE(img->Flush().ok());
  uint64_t grown;
  {
    ReadScope reading;  // as a fuse read between resolving and its reply
    ASSERT_TRUE(img->WriteZeroes(0, d.size(), true, nullptr).ok());
    ASSERT_TRUE(img->Flush().ok());
    const uint64_t before = f->Size();
    ASSERT_TRUE(img->Write(16 * kCluster, d.data(), d.size(), nullptr).ok());
    grown = f->Size() - before;
  }
  EXPECT_GE(grown, d.size()) << "clusters freed under an open read were handed out again";
  // Once the read is done they are free for the next allocation.
  ASSERT_TRUE(img->WriteZeroes(16 * kCluster, d.size(), true, nullptr).ok());
  ASSERT_TRUE(img->Flush().ok());
  const uint64_t before = f->Size();
  ASSERT_TRUE(img->Write(32 * kCluster, d.data(), d.size(), nullptr).ok());
  EXPECT_EQ(f->Size(), before) << "clusters freed before were not reused after the read ended";
  img.reset();
  EXPECT_EQ(test::CheckQcow2(*f, nullptr, true), "");
}

TEST(SpaceReuse, FreeClustersAreTrimmedFromTheEndAtClose) {
  auto f = test::NewQcow2(16 << 20);
  const uint64_t empty = f->Size();
  {
    auto img = test::OpenShared(f, true);
    WriteThenDiscard(*img, 32, 0x66);
  }
  EXPECT_LE(f->Size(), empty + 2 * kCluster) << "the discarded clusters at the end stayed in the file";
  EXPECT_EQ(test::CheckQcow2(*f, nullptr, true), "");
}

TEST(SpaceReuse, FreeClustersAreFoundAgainAtTheNextOpen) {
  auto f = test::NewQcow2(16 << 20);
  {
    auto img = test::OpenShared(f, true);
    std::vector<uint8_t> d(32 * kCluster, 0x44);
    ASSERT_TRUE(img->Write(0, d.data(), d.size(), nullptr).ok());
    ASSERT_TRUE(img->Write(d.size(), d.data(), kCluster, nullptr).ok());  // used, after them
    ASSERT_TRUE(img->Flush().ok());
    ASSERT_TRUE(img->WriteZeroes(0, d.size(), true, nullptr).ok());
  }
  const uint64_t size = f->Size();
  auto img = test::OpenShared(f, true);
  std::vector<uint8_t> d(32 * kCluster, 0x55);
  ASSERT_TRUE(img->Write(0, d.data(), d.size(), nullptr).ok());
  ASSERT_TRUE(img->Flush().ok());
  EXPECT_EQ(f->Size(), size);
}

TEST(Overlap, AWriteThroughAnL1EntryOnTheRefcountTableIsRefused) {
  auto f = test::NewQcow2(1 << 30);
  {
    auto img = test::OpenShared(f, true);
    std::vector<uint8_t> d(4096, 0x22);
    ASSERT_TRUE(img->Write(0, d.data(), d.size(), nullptr).ok());
  }
  uint8_t h[80];
  ASSERT_TRUE(f->PRead(0, h, sizeof h).ok());
  const uint64_t l1 = LoadBE64(h + 40), rt = LoadBE64(h + 48);
  uint8_t e[8];
  StoreBE64(e, rt | (1ull << 63));  // L1[1] names the refcount table, COPIED
  ASSERT_TRUE(f->PWrite(l1 + 8, e, 8).ok());
  const std::vector<uint8_t> table_before = [&] {
    std::vector<uint8_t> t(kCluster);
    (void)f->PRead(rt, t.data(), t.size());
    return t;
  }();
  auto img = test::OpenShared(f, true);
  std::vector<uint8_t> d(4096, 0x33);
  Status st = img->Write((512 << 20) + 4096, d.data(), d.size(), nullptr);
  EXPECT_EQ(st.code(), Code::kCorrupt) << st.ToString();
  EXPECT_NE(st.message().find("refcount table"), std::string::npos) << st.message();
  (void)img->Flush();
  img.reset();
  std::vector<uint8_t> table_after(kCluster);
  ASSERT_TRUE(f->PRead(rt, table_after.data(), table_after.size()).ok());
  EXPECT_EQ(table_after, table_before) << "the refcount table was overwritten";
  ASSERT_TRUE(f->PRead(0, h, sizeof h).ok());
  EXPECT_TRUE(LoadBE64(h + 72) & 2) << "the corrupt bit is not set";
}

}  // namespace
}  // namespace imgfs
