// Backing chains on real files: reads through layers, copy-on-write of
// partial clusters, backing files smaller than the overlay, and create.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>

#include "imagecore/chain.h"
#include "imagecore/ops.h"
#include "test_util.h"

namespace imgfs {
namespace {

class ChainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/imgfs-unit-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override { (void)system(("rm -rf " + dir_).c_str()); }
  std::string P(const std::string& name) { return dir_ + "/" + name; }
  void Create(const std::string& name, const std::string& fmt, const std::string& size,
              const std::string& backing = "", const std::string& opts = "") {
    ops::CreateRequest r;
    r.path = P(name);
    r.format = fmt;
    r.size = size;
    r.backing_file = backing;
    r.options = opts;
    Status st = ops::Create(r);
    ASSERT_TRUE(st.ok()) << st.ToString();
  }
  void Fill(const std::string& name, uint64_t off, uint8_t byte, size_t len) {
    auto c = Chain::Open(P(name), "", true);
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    std::vector<uint8_t> d(len, byte);
    ASSERT_TRUE(c.value()->Write(off, d.data(), len).ok());
  }
  std::string dir_;
};

TEST_F(ChainTest, OverlayReadsThroughAndCopiesOnWrite) {
  Create("base.qcow2", "qcow2", "1M", "", "cluster_size=4096");
  Fill("base.qcow2", 0, 0xbb, 1 << 20);
  Create("top.qcow2", "qcow2", "", "base.qcow2", "cluster_size=4096");  // relative name, size from backing
  Fill("top.qcow2", 5000, 0x77, 100);  // inside one cluster: the rest must come from base

  auto c = Chain::Open(P("top.qcow2"), "", false);
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  EXPECT_EQ(c.value()->depth(), 2u);
  EXPECT_EQ(c.value()->VirtualSize(), 1u << 20);
  std::vector<uint8_t> buf(8192);
  ASSERT_TRUE(c.value()->Read(0, 4096, buf.data(), 8192).ok());
  for (size_t i = 0; i < 8192; ++i) {
    uint64_t off = 4096 + i;
    uint8_t want = (off >= 5000 && off < 5100) ? 0x77 : 0xbb;
    ASSERT_EQ(buf[i], want) << "at " << off;
  }
  // The top layer now owns the whole cluster 4096..8191 verbatim.
  Extent e;
  ASSERT_TRUE(c.value()->layer(0).BlockStatus(4096, 4096, &e).ok());
  EXPECT_EQ(e.kind, ExtentKind::kData);
  ASSERT_TRUE(c.value()->layer(0).BlockStatus(8192, 4096, &e).ok());
  EXPECT_EQ(e.kind, ExtentKind::kUnallocated);
  // The base view (depth 1) is untouched.
  ASSERT_TRUE(c.value()->Read(1, 5000, buf.data(), 100).ok());
  EXPECT_EQ(buf[0], 0xbb);
}

TEST_F(ChainTest, BackingSmallerThanOverlayReadsZerosPastItsEnd) {
  Create("small.raw", "raw", "64k");
  Fill("small.raw", 0, 0x11, 64 << 10);
  ops::CreateRequest r;
  r.path = P("big.qcow2");
  r.format = "qcow2";
  r.size = "1M";
  r.backing_file = "small.raw";
  r.backing_format = "raw";
  ASSERT_TRUE(ops::Create(r).ok());
  Fill("big.qcow2", (64 << 10) - 10, 0x22, 20);  // straddles the backing end
  auto c = Chain::Open(P("big.qcow2"), "", false);
  ASSERT_TRUE(c.ok());
  std::vector<uint8_t> buf(200 << 10);
  ASSERT_TRUE(c.value()->Read(0, 0, buf.data(), buf.size()).ok());
  for (size_t i = 0; i < buf.size(); ++i) {
    uint8_t want = i < (64 << 10) - 10 ? 0x11 : i < (64 << 10) + 10 ? 0x22 : 0;
    ASSERT_EQ(buf[i], want) << "at " << i;
  }
  Resolved res;
  ASSERT_TRUE(c.value()->Resolve(0, 128 << 10, 64 << 10, &res).ok());
  EXPECT_EQ(res.kind, Resolved::kZero);
}

TEST_F(ChainTest, MissingBackingFileIsAnErrorNamingIt) {
  Create("b.qcow2", "qcow2", "1M");
  Create("o.qcow2", "qcow2", "", "b.qcow2");
  ASSERT_EQ(unlink(P("b.qcow2").c_str()), 0);
  auto c = Chain::Open(P("o.qcow2"), "", false);
  ASSERT_FALSE(c.ok());
  EXPECT_NE(c.status().message().find("b.qcow2"), std::string::npos);
}

TEST_F(ChainTest, CreateFailureLeavesNoFile) {
  ops::CreateRequest r;
  r.path = P("x.qcow2");
  r.format = "qcow2";
  r.size = "1M";
  r.options = "cluster_size=3000";
  EXPECT_FALSE(ops::Create(r).ok());
  EXPECT_NE(access(P("x.qcow2").c_str(), F_OK), 0);
  r.options = "";
  r.backing_file = "nope.qcow2";
  EXPECT_FALSE(ops::Create(r).ok());
  EXPECT_NE(access(P("x.qcow2").c_str(), F_OK), 0);
  auto names = io::ListDir(dir_);
  ASSERT_TRUE(names.ok());
  EXPECT_TRUE(names.value().empty());
}

TEST_F(ChainTest, InfoReportsTheChain) {
  Create("b.qcow2", "qcow2", "2M", "", "compat=0.10");
  Create("o.qcow2", "qcow2", "", "b.qcow2");
  auto info = ops::CollectInfo(P("o.qcow2"), "", true);
  ASSERT_TRUE(info.ok());
  ASSERT_EQ(info.value().size(), 2u);
  EXPECT_EQ(info.value()[0].backing_filename, "b.qcow2");
  EXPECT_EQ(info.value()[0].backing_format, "qcow2");
  EXPECT_EQ(info.value()[1].info.virtual_size, 2u << 20);
  std::string json = ops::InfoJson(info.value(), true);
  EXPECT_NE(json.find("\"compat\": \"0.10\""), std::string::npos);
  EXPECT_NE(json.find("\"backing-filename\": \"b.qcow2\""), std::string::npos);
}

}  // namespace
}  // namespace imgfs

namespace imgfs {
namespace {

// The one resolver of backing names: stored names, then alternates; a
// Windows name also by its file name beside the child.
TEST(ResolveBacking, TriesEveryNameItStores) {
  test::MemFiles files;
  files.Add("/vms/base.vhdx");
  files.Add("/vms/sub/mid.avhdx");
  const std::string child = "/vms/top.avhdx";
  EXPECT_EQ(ResolveBacking(child, BackingRef{.name = "base.vhdx"}, &files), "/vms/base.vhdx");
  EXPECT_EQ(ResolveBacking(child, BackingRef{.name = "C:\\Hyper-V\\Disks\\base.vhdx"}, &files), "/vms/base.vhdx");
  EXPECT_EQ(ResolveBacking(child, BackingRef{.name = ".\\sub\\mid.avhdx"}, &files), "/vms/sub/mid.avhdx");
  EXPECT_EQ(ResolveBacking(child, BackingRef{"\\\\?\\Volume{x}\\gone.vhdx", "", {"missing.vhdx", "base.vhdx"}}, &files),
            "/vms/base.vhdx");
  // None found: the first name, resolved, for the error to name it.
  EXPECT_EQ(ResolveBacking(child, BackingRef{"nowhere.vhdx", "", {"base2.vhdx"}}, &files), "/vms/nowhere.vhdx");
  // A Linux name may hold a backslash: found as it is first.
  files.Add("/vms/odd\\name.qcow2");
  EXPECT_EQ(ResolveBacking(child, BackingRef{.name = "odd\\name.qcow2"}, &files), "/vms/odd\\name.qcow2");
  EXPECT_EQ(ResolveBacking(child, BackingRef{.name = "/abs/base.qcow2"}, &files), "/abs/base.qcow2");
}

}  // namespace
}  // namespace imgfs
