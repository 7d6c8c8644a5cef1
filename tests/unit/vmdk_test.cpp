// VMDK: the descriptor parser, and images of several files opened from
// memory (descriptor and extents handed over by test::MemFiles).
#include <gtest/gtest.h>

#include <cstring>

#include "base/endian.h"
#include "formats/vmdk/vmdk_descriptor.h"
#include "formats/vmdk/vmdk_image.h"
#include "formats/vmdk/vmdk_sparse.h"
#include "test_util.h"

namespace imgfs {
namespace {

using vmdk::ParseDescriptor;

TEST(VmdkDescriptor, ParsesExtentsKeysAndCrlf) {
  auto d = ParseDescriptor(
      "# Disk DescriptorFile\r\nversion=1\r\nCID=0000abcd\r\nparentCID=ffffffff\r\n"
      "createType=\"twoGbMaxExtentFlat\"\r\n# comment\r\n"
      "RW 4096 FLAT \"disk with spaces-f001.vmdk\" 0\r\nRDONLY 2048 ZERO\r\n"
      "RW 100 VMFS \"x-flat.vmdk\" 17\r\nddb.adapterType = \"lsilogic\"\r\n");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->cid, 0xabcdu);
  EXPECT_EQ(d->parent_cid, vmdk::kNoParent);
  EXPECT_EQ(d->create_type, "twoGbMaxExtentFlat");
  ASSERT_EQ(d->extents.size(), 3u);
  EXPECT_EQ(d->extents[0].file, "disk with spaces-f001.vmdk");
  EXPECT_EQ(d->extents[0].sectors, 4096u);
  EXPECT_EQ(d->extents[1].type, "ZERO");
  EXPECT_EQ(d->extents[1].access, vmdk::ExtentAccess::kRdOnly);
  EXPECT_FALSE(d->extents[1].has_file);
  EXPECT_EQ(d->extents[2].offset, 17u);
  ASSERT_EQ(d->ddb.size(), 1u);
  EXPECT_EQ(d->ddb[0].second, "lsilogic");
}

TEST(VmdkDescriptor, EmptyFileNameAndParentHint) {
  auto d = ParseDescriptor("version=1\nCID=1\nparentCID=2\ncreateType=\"monolithicSparse\"\n"
                           "parentFileNameHint=\"C:\\VMs\\base.vmdk\"\nRW 20 SPARSE \"\"\n");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  ASSERT_TRUE(d->parent_hint);
  EXPECT_EQ(*d->parent_hint, "C:\\VMs\\base.vmdk");
  EXPECT_TRUE(d->extents[0].has_file);
  EXPECT_EQ(d->extents[0].file, "");
}

TEST(VmdkDescriptor, RefusesWhatItCannotReadExactly) {
  const char* bad[] = {
      "CID=1\ncreateType=\"custom\"\n",                                   // no version
      "version=9\ncreateType=\"custom\"\n",                               // unknown version
      "version=1\n",                                                      // no createType
      "version=1\ncreateType=\"x\"\nRW abc FLAT \"f\" 0\n",               // size
      "version=1\ncreateType=\"x\"\nRW 0 FLAT \"f\" 0\n",                 // empty extent
      "version=1\ncreateType=\"x\"\nRW 10 FLAT \"f 0\n",                  // unterminated name
      "version=1\ncreateType=\"x\"\nRW 10 FLAT \"f\" 0 junk\n",           // trailing words
      "version=1\ncreateType=\"x\"\nRW 10 FLAT\n",                        // no file
      "version=1\ncreateType=\"x\"\nRW 99999999999999999999 FLAT \"f\"\n",  // overflow
      "version=1\nCID=nothex\ncreateType=\"x\"\n",
  };
  for (const char* text : bad) EXPECT_FALSE(ParseDescriptor(text).ok()) << text;
}

TEST(VmdkDescriptor, BoundsTheExtentCount) {
  std::string text = "version=1\ncreateType=\"custom\"\n";
  for (size_t i = 0; i <= vmdk::kMaxExtents; ++i) text += "RW 1 ZERO\n";
  EXPECT_FALSE(ParseDescriptor(text).ok());
}

std::vector<uint8_t> Bytes(const std::string& s) { return std::vector<uint8_t>(s.begin(), s.end()); }

// A hosted sparse extent of `grains` 4 KiB grains (8 sectors each), one
// grain table; entry i of the table is `entries[i]`.
std::shared_ptr<io::File> SparseExtent(uint64_t grains, const std::vector<uint32_t>& entries, uint32_t flags,
                                       uint32_t version = 1) {
  auto f = io::NewMemFile("s");
  uint8_t h[512] = {};
  std::memcpy(h, "KDMV", 4);
  StoreLE32(h + 4, version);
  StoreLE32(h + 8, flags);
  StoreLE64(h + 12, grains * 8);  // capacity
  StoreLE64(h + 20, 8);           // grain size
  StoreLE32(h + 44, 512);         // entries per table
  StoreLE64(h + 56, 1);           // grain directory at sector 1
  StoreLE64(h + 64, 16);          // overhead
  EXPECT_TRUE(f->PWrite(0, h, sizeof h).ok());
  uint8_t gd[4];
  StoreLE32(gd, 2);  // the one table at sector 2
  EXPECT_TRUE(f->PWrite(512, gd, 4).ok());
  std::vector<uint8_t> gt(2048);
  for (size_t i = 0; i < entries.size(); ++i) StoreLE32(&gt[i * 4], entries[i]);
  EXPECT_TRUE(f->PWrite(1024, gt.data(), gt.size()).ok());
  return f;
}

TEST(VmdkImage, ReadsADescriptorWithFlatZeroAndSparseExtents) {
  test::MemFiles files;
  files.Add("/d/a.vmdk", test::FileWith(Bytes("# Disk DescriptorFile\nversion=1\nCID=00000007\nparentCID=ffffffff\n"
                                              "createType=\"custom\"\nRW 8 FLAT \"a-flat.bin\" 1\nRW 8 ZERO\n"
                                              "RW 32 SPARSE \"a-s001.vmdk\"\n")));
  std::vector<uint8_t> flat(512 * 9);
  for (size_t i = 0; i < flat.size(); ++i) flat[i] = uint8_t(i * 7);
  files.Add("/d/a-flat.bin", test::FileWith(flat));
  // grain 0 at sector 16, grain 1 unallocated, grain 2 zeroed, grain 3 at sector 24
  auto sparse = SparseExtent(4, {16, 0, 1, 24}, vmdk::kFlagZeroGrain, 2);
  std::vector<uint8_t> g0(4096, 0xa1), g3(4096, 0xb2);
  ASSERT_TRUE(sparse->PWrite(16 * 512, g0.data(), g0.size()).ok());
  ASSERT_TRUE(sparse->PWrite(24 * 512, g3.data(), g3.size()).ok());
  files.Add("/d/a-s001.vmdk", sparse);

  OpenOptions opts(false);
  opts.opener = &files;
  auto img = OpenImage("/d/a.vmdk", "", opts);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  EXPECT_STREQ(img.value()->format_name(), "vmdk");
  ASSERT_EQ(img.value()->VirtualSize(), (8 + 8 + 32) * 512u);
  std::vector<uint8_t> want(img.value()->VirtualSize(), 0);
  std::copy(flat.begin() + 512, flat.end(), want.begin());
  std::copy(g0.begin(), g0.end(), want.begin() + 16 * 512);
  std::copy(g3.begin(), g3.end(), want.begin() + 16 * 512 + 3 * 4096);
  EXPECT_EQ(test::ReadLayer(*img.value()), want);

  Extent e;
  ASSERT_TRUE(img.value()->BlockStatus(16 * 512 + 4096, 8192, &e).ok());
  EXPECT_EQ(e.kind, ExtentKind::kUnallocated);
  EXPECT_EQ(e.length, 4096u);
  ASSERT_TRUE(img.value()->BlockStatus(16 * 512 + 8192, 4096, &e).ok());
  EXPECT_EQ(e.kind, ExtentKind::kZero);

  const auto f = img.value()->files();
  ASSERT_EQ(f.size(), 3u);
  EXPECT_EQ(f[0].role, FileRole::kDescriptor);
  EXPECT_EQ(f[1].role, FileRole::kExtent);
  EXPECT_EQ(f[1].file->path(), "/d/a-flat.bin");
  EXPECT_EQ(f[2].file->path(), "/d/a-s001.vmdk");
  uint64_t sum = 0;
  for (const char* p : {"/d/a.vmdk", "/d/a-flat.bin", "/d/a-s001.vmdk"}) sum += files.Get(p)->AllocatedBytes();
  EXPECT_EQ(img.value()->AllocatedBytes(), sum);
  EXPECT_TRUE(img.value()->read_only());
}

TEST(VmdkImage, AMissingExtentIsNamed) {
  test::MemFiles files;
  files.Add("/d/b.vmdk", test::FileWith(Bytes("version=1\nCID=1\nparentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
                                              "RW 8 FLAT \"b-flat.vmdk\" 0\n")));
  OpenOptions opts(false);
  opts.opener = &files;
  auto img = OpenImage("/d/b.vmdk", "", opts);
  ASSERT_FALSE(img.ok());
  EXPECT_NE(img.status().message().find("b-flat.vmdk"), std::string::npos) << img.status().ToString();
}

TEST(VmdkImage, HostileSparseHeadersAreRefused) {
  struct Case {
    const char* what;
    size_t off;
    uint64_t value;
    int bytes;
  } cases[] = {
      {"grain size not a power of two", 20, 24, 8},
      {"grain size zero", 20, 0, 8},
      {"huge capacity", 12, uint64_t(1) << 62, 8},
      {"grain directory past the end", 56, 1u << 30, 8},
      {"no entries per table", 44, 0, 4},
      {"unknown incompatible flag", 8, 0x40000, 4},
      {"version 4", 4, 4, 4},
  };
  for (const Case& c : cases) {
    auto f = SparseExtent(4, {16}, 0);
    uint8_t v[8];
    StoreLE64(v, c.value);
    ASSERT_TRUE(f->PWrite(c.off, v, c.bytes).ok());
    auto img = vmdk::VmdkImage::Open(std::make_unique<test::SharedFile>(f), OpenOptions(false));
    EXPECT_FALSE(img.ok()) << c.what;
  }
  // A grain that lies past the end of the file is an error when read, not zeros.
  auto f = SparseExtent(4, {1000}, 0);
  auto img = vmdk::VmdkImage::Open(std::make_unique<test::SharedFile>(f), OpenOptions(false));
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  Extent e;
  EXPECT_FALSE(img.value()->BlockStatus(0, 4096, &e).ok());
  // So is one that starts in the file (6 sectors long) and runs past its
  // end: the next grain allocated there would share its bytes.
  auto g = SparseExtent(4, {5}, 0);
  ASSERT_EQ(g->Size(), 6 * 512u);
  auto img2 = vmdk::VmdkImage::Open(std::make_unique<test::SharedFile>(g), OpenOptions(false));
  ASSERT_TRUE(img2.ok()) << img2.status().ToString();
  EXPECT_FALSE(img2.value()->BlockStatus(0, 4096, &e).ok());
}

}  // namespace
}  // namespace imgfs
