// qcow2 driver on in-memory files: round trips against a model, refcount
// widths, refcount table growth, and refusals by feature name.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "base/endian.h"
#include "test_util.h"

namespace imgfs {
namespace {

using test::CheckQcow2;
using test::NewQcow2;
using test::OpenShared;

TEST(Qcow2, NewImageIsEmptyAndConsistent) {
  auto f = NewQcow2(10 << 20);
  ASSERT_TRUE(f);
  auto img = OpenShared(f, true);
  ASSERT_TRUE(img);
  EXPECT_EQ(img->VirtualSize(), 10u << 20);
  EXPECT_FALSE(img->read_only());
  Extent e;
  ASSERT_TRUE(img->BlockStatus(0, 10 << 20, &e).ok());
  EXPECT_EQ(e.kind, ExtentKind::kUnallocated);
  EXPECT_EQ(CheckQcow2(*f), "");
}

struct Params {
  const char* options;
  uint64_t size;
};

class Qcow2RoundTrip : public ::testing::TestWithParam<Params> {};

TEST_P(Qcow2RoundTrip, RandomWritesMatchModelAndStayConsistent) {
  const Params p = GetParam();
  auto f = NewQcow2(p.size, p.options);
  ASSERT_TRUE(f) << p.options;
  std::vector<uint8_t> model(p.size, 0);
  std::mt19937_64 rng(1234);
  {
    auto img = OpenShared(f, true);
    ASSERT_TRUE(img);
    for (int i = 0; i < 200; ++i) {
      uint64_t len = 1 + rng() % 20000;
      uint64_t off = rng() % (p.size - len);
      std::vector<uint8_t> data(len);
      for (auto& b : data) b = uint8_t(rng());
      ASSERT_TRUE(img->Write(off, data.data(), len, nullptr).ok());
      std::memcpy(&model[off], data.data(), len);
      if (i % 50 == 0) {
        ASSERT_TRUE(img->Flush().ok());
      }
    }
    EXPECT_EQ(test::ReadLayer(*img), model);
  }  // closing flushes
  uint64_t leaks = 1;
  EXPECT_EQ(CheckQcow2(*f, &leaks), "");
  EXPECT_EQ(leaks, 0u);
  auto again = OpenShared(f, false);
  ASSERT_TRUE(again);
  EXPECT_EQ(test::ReadLayer(*again), model);
}

INSTANTIATE_TEST_SUITE_P(
    Layouts, Qcow2RoundTrip,
    ::testing::Values(Params{"", 8 << 20}, Params{"cluster_size=512", 2 << 20},
                      Params{"cluster_size=4096", 4 << 20}, Params{"cluster_size=2M", 16 << 20},
                      Params{"compat=0.10", 4 << 20}, Params{"refcount_bits=1,cluster_size=4k", 4 << 20},
                      Params{"refcount_bits=2,cluster_size=4k", 4 << 20},
                      Params{"refcount_bits=4,cluster_size=4k", 4 << 20},
                      Params{"refcount_bits=8,cluster_size=4k", 4 << 20},
                      Params{"refcount_bits=32,cluster_size=4k", 4 << 20},
                      Params{"refcount_bits=64,cluster_size=512", 2 << 20}));

TEST(Qcow2, RefcountTableGrowsWithSmallClusters) {
  // 512-byte clusters, 64-bit refcounts: a refcount block covers 64
  // clusters (32 KiB), a one-cluster table 64 blocks (2 MiB of file).
  auto f = NewQcow2(16 << 20, "cluster_size=512,refcount_bits=64");
  ASSERT_TRUE(f);
  std::vector<uint8_t> data(6 << 20, 0x5a);
  {
    auto img = OpenShared(f, true);
    ASSERT_TRUE(img->Write(12345, data.data(), data.size(), nullptr).ok());
  }
  EXPECT_GT(f->Size(), 6u << 20);
  uint64_t leaks = 1;
  EXPECT_EQ(CheckQcow2(*f, &leaks), "");
  EXPECT_EQ(leaks, 0u);
  auto img = OpenShared(f, false);
  std::vector<uint8_t> back(data.size());
  uint64_t off = 12345, done = 0;
  while (done < back.size()) {
    Extent e;
    ASSERT_TRUE(img->BlockStatus(off + done, back.size() - done, &e).ok());
    ASSERT_EQ(e.kind, ExtentKind::kData);
    ASSERT_TRUE(e.file->PRead(e.host_offset, &back[done], e.length).ok());
    done += e.length;
  }
  EXPECT_EQ(back, data);
}

TEST(Qcow2, WritesPastTheEndAreRefused) {
  auto f = NewQcow2(1 << 20);
  auto img = OpenShared(f, true);
  uint8_t b[2] = {1, 2};
  Status st = img->Write((1 << 20) - 1, b, 2, nullptr);
  EXPECT_EQ(st.code(), Code::kNoSpace);
}

// Sets bits in the incompatible feature field and returns the open status.
Status OpenWithIncompat(uint64_t bits) {
  auto f = NewQcow2(1 << 20);
  uint8_t raw[8];
  StoreBE64(raw, bits);
  EXPECT_TRUE(f->PWrite(72, raw, 8).ok());
  const FormatDriver* drv = FindFormat("qcow2");
  auto img = drv->open(std::make_unique<test::SharedFile>(f), OpenOptions{true});
  return img.ok() ? Status::OK() : img.status();
}

TEST(Qcow2, RefusesFeaturesItCannotReadByName) {
  Status st = OpenWithIncompat(1ull << 2);
  EXPECT_EQ(st.code(), Code::kUnsupported);
  EXPECT_NE(st.message().find("external data file"), std::string::npos);
  st = OpenWithIncompat(1ull << 40);
  EXPECT_NE(st.message().find("unknown incompatible feature"), std::string::npos);
}

TEST(Qcow2, CorruptImagesOpenReadOnly) {
  auto f = NewQcow2(1 << 20);
  uint8_t raw[8];
  StoreBE64(raw, 1ull << 1);
  ASSERT_TRUE(f->PWrite(72, raw, 8).ok());
  auto img = OpenShared(f, true);
  ASSERT_TRUE(img);
  EXPECT_TRUE(img->read_only());
  uint8_t b = 1;
  EXPECT_EQ(img->Write(0, &b, 1, nullptr).code(), Code::kReadOnly);
}

TEST(Qcow2, DirtyImageIsRepairedAtReadWriteOpen) {
  auto f = NewQcow2(1 << 20);
  {
    auto img = OpenShared(f, true);
    std::vector<uint8_t> d(5000, 0x3c);
    ASSERT_TRUE(img->Write(100, d.data(), d.size(), nullptr).ok());
  }
  // As lazy refcounts leave it after a crash: dirty, a data cluster's
  // refcount never written (find the first data cluster through the map).
  auto probe = OpenShared(f, false);
  Extent e;
  ASSERT_TRUE(probe->BlockStatus(0, 4096, &e).ok());
  ASSERT_EQ(e.kind, ExtentKind::kData);
  const uint64_t cluster = e.host_offset >> 16;
  probe.reset();
  uint8_t hdr[8];
  StoreBE64(hdr, 1ull << 0);
  ASSERT_TRUE(f->PWrite(72, hdr, 8).ok());
  uint8_t rt[8];
  ASSERT_TRUE(f->PRead(65536, rt, 8).ok());  // refcount table at cluster 1
  uint8_t zero[2] = {0, 0};
  ASSERT_TRUE(f->PWrite(LoadBE64(rt) + 2 * cluster, zero, 2).ok());
  ASSERT_NE(CheckQcow2(*f), "");  // refcount lower than its reference

  auto img = OpenShared(f, true);
  ASSERT_TRUE(img);
  EXPECT_FALSE(img->read_only()) << img->read_only_reason();
  img.reset();
  uint64_t leaks = 1;
  EXPECT_EQ(CheckQcow2(*f, &leaks), "");
  EXPECT_EQ(leaks, 0u);
  ASSERT_TRUE(f->PRead(72, hdr, 8).ok());
  EXPECT_EQ(LoadBE64(hdr) & 1, 0u) << "dirty bit still set";
}

TEST(Qcow2, TruncatedImageIsRefused) {
  auto f = NewQcow2(1 << 20);
  ASSERT_TRUE(f->Truncate(100).ok());
  const FormatDriver* drv = FindFormat("qcow2");
  auto img = drv->open(std::make_unique<test::SharedFile>(f), OpenOptions{false});
  EXPECT_FALSE(img.ok());
}

TEST(Qcow2, EncryptionWithoutItsHeaderOrOfAnUnknownKindIsRefused) {
  for (uint32_t method : {2u, 3u}) {  // LUKS without the header extension; no such method
    auto f = NewQcow2(1 << 20);
    uint8_t raw[4];
    StoreBE32(raw, method);
    ASSERT_TRUE(f->PWrite(32, raw, 4).ok());
    const FormatDriver* drv = FindFormat("qcow2");
    auto img = drv->open(std::make_unique<test::SharedFile>(f), OpenOptions{false});
    ASSERT_FALSE(img.ok());
    EXPECT_EQ(img.status().code(), method == 2 ? Code::kCorrupt : Code::kUnsupported);
    EXPECT_NE(img.status().message().find("encryption"), std::string::npos) << img.status().message();
  }
}

}  // namespace
}  // namespace imgfs

namespace imgfs {
namespace {

TEST(Qcow2, BlockStatusSkipsAbsentL2TablesInOneAnswer) {
  // 512-byte clusters: one L2 table maps only 32 KiB, so a 1 GiB sparse
  // image has 32768 absent tables; SEEK_DATA must not walk them one by one.
  auto f = test::NewQcow2(1ull << 30, "cluster_size=512");
  auto img = test::OpenShared(f, true);
  ASSERT_TRUE(img);
  Extent e;
  ASSERT_TRUE(img->BlockStatus(0, 1ull << 30, &e).ok());
  EXPECT_EQ(e.kind, ExtentKind::kUnallocated);
  EXPECT_EQ(e.length, 1ull << 30);
  uint8_t b = 7;
  ASSERT_TRUE(img->Write((512u << 20) + 100, &b, 1, nullptr).ok());
  ASSERT_TRUE(img->BlockStatus(4096, 1ull << 30, &e).ok());
  EXPECT_EQ(e.kind, ExtentKind::kUnallocated);
  EXPECT_EQ(e.length, (512u << 20) - 4096);  // up to the table that now exists
  ASSERT_TRUE(img->BlockStatus(512u << 20, 1ull << 30, &e).ok());
  EXPECT_EQ(e.kind, ExtentKind::kData);
  EXPECT_EQ(e.length, 512u);
}

}  // namespace
}  // namespace imgfs
