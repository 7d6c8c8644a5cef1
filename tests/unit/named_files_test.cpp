// One resolver for every name an image stores, and files opened through
// an opener that tests can replace.
#include <gtest/gtest.h>

#include "imagecore/format.h"
#include "test_util.h"

namespace imgfs {
namespace {

TEST(ResolveNamedPath, RelativeNamesAreBesideTheNamingFile) {
  EXPECT_EQ(ResolveNamedPath("/srv/images/a.vmdk", "a-flat.vmdk"), "/srv/images/a-flat.vmdk");
  EXPECT_EQ(ResolveNamedPath("/srv/images/a.vmdk", "sub/b.vmdk"), "/srv/images/sub/b.vmdk");
  EXPECT_EQ(ResolveNamedPath("a.vmdk", "b.vmdk"), "b.vmdk");
  EXPECT_EQ(ResolveNamedPath("/srv/a.qcow2", "/abs/b.raw"), "/abs/b.raw");
  EXPECT_EQ(ResolveNamedPath("/srv/a.qcow2", "nbd://host/x"), "nbd://host/x");
  EXPECT_EQ(ResolveNamedPath("/srv/a.qcow2", "json:{}"), "json:{}");
  EXPECT_EQ(ResolveNamedPath("/srv/a.qcow2", ""), "");
}

TEST(OpenNamed, OpensThroughTheOpenerAndNamesTheMissingFile) {
  test::MemFiles files;
  auto f = files.Add("/d/extent.bin");
  ASSERT_TRUE(f->PWrite(0, "abc", 3).ok());
  OpenOptions opts(true);
  opts.opener = &files;
  auto got = opts.OpenNamed("/d/image.vmdk", "extent.bin", true);
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  char buf[3];
  ASSERT_TRUE(got.value()->PRead(0, buf, 3).ok());
  EXPECT_EQ(std::string(buf, 3), "abc");
  auto missing = opts.OpenNamed("/d/image.vmdk", "gone.bin", false);
  ASSERT_FALSE(missing.ok());
  EXPECT_NE(missing.status().message().find("/d/gone.bin"), std::string::npos) << missing.status().ToString();
}

TEST(OpenImage, TakesTheImageFileFromTheOpener) {
  test::MemFiles files;
  files.Add("/m/a.qcow2", test::NewQcow2(1 << 20));
  OpenOptions opts(false);
  opts.opener = &files;
  auto img = OpenImage("/m/a.qcow2", "", opts);
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  EXPECT_STREQ(img.value()->format_name(), "qcow2");
  ASSERT_EQ(img.value()->files().size(), 1u);
  EXPECT_EQ(img.value()->files()[0].role, FileRole::kImage);
  EXPECT_EQ(img.value()->AllocatedBytes(), files.Get("/m/a.qcow2")->AllocatedBytes());
}

}  // namespace
}  // namespace imgfs
