// The mount's namespace on in-memory files: what it lists, what it leaves
// out and why, which files belong to which image, and what it notices of
// changes made behind its back.
#include "namespace.h"

#include <gtest/gtest.h>

#include "imagecore/ops.h"
#include "test_util.h"

namespace imgfs::fs {
namespace {

Status Make(test::MemFiles& files, const std::string& path, const std::string& format, const std::string& size,
            const std::string& options = "", const std::string& backing = "") {
  ops::CreateRequest req;
  req.path = path;
  req.format = format;
  req.size = size;
  req.options = options;
  req.backing_file = backing;
  req.backing_format = backing.empty() ? "" : format;
  req.unsafe = !backing.empty();  // the parent is not on the host: not opened
  NewFiles out(files, path);
  IMGFS_RETURN_IF_ERROR(ops::StageCreate(req, &out));
  return out.Commit();
}

void AddText(test::MemFiles& files, const std::string& path, const std::string& text) {
  ASSERT_TRUE(files.Add(path)->PWrite(0, text.data(), text.size()).ok());
}

TEST(Namespace, ListsImagesAndSkipsOtherFiles) {
  test::MemFiles files;
  ASSERT_TRUE(Make(files, "/src/a.qcow2", "qcow2", "1M").ok());
  ASSERT_TRUE(files.Add("/src/disk.img")->Truncate(1 << 20).ok());
  AddText(files, "/src/notes.txt", "not a disk\n");
  Namespace ns(files);
  ASSERT_TRUE(ns.Scan("/src", false).ok());
  EXPECT_EQ(ns.size(), 2u);
  ASSERT_GE(ns.Find("a.qcow2"), 0);
  ASSERT_GE(ns.Find("disk.img"), 0);
  EXPECT_EQ(ns.Find("notes.txt"), -1);
  EXPECT_EQ(ns.image(size_t(ns.Find("disk.img"))).format(), PlainFormat().name);
  EXPECT_EQ(ns.image(size_t(ns.Find("a.qcow2"))).virtual_size.load(), 1u << 20);
}

TEST(Namespace, BackingFileIsServedReadOnlyWithTheReason) {
  test::MemFiles files;
  ASSERT_TRUE(Make(files, "/src/base.qcow2", "qcow2", "1M").ok());
  ASSERT_TRUE(Make(files, "/src/top.qcow2", "qcow2", "1M", "", "base.qcow2").ok());
  Namespace ns(files);
  ASSERT_TRUE(ns.Scan("/src", false).ok());
  ImageEntry& base = ns.image(size_t(ns.Find("base.qcow2")));
  ImageEntry& top = ns.image(size_t(ns.Find("top.qcow2")));
  ASSERT_TRUE(base.read_only.is());
  EXPECT_EQ(base.read_only.why(), "it is the backing file of top.qcow2");
  EXPECT_EQ(ns.WhyReadOnly(size_t(ns.Find("base.qcow2"))), base.read_only.why());
  EXPECT_FALSE(top.read_only.is());
  ASSERT_EQ(top.layer_paths.size(), 2u);
  EXPECT_EQ(top.backing_path, "/src/base.qcow2");
  EXPECT_EQ(ns.BackingUsers("/src/base.qcow2", size_t(-1)), std::vector<size_t>{size_t(ns.Find("top.qcow2"))});
}

TEST(Namespace, ImageWithMissingBackingFileIsLeftOut) {
  test::MemFiles files;
  ASSERT_TRUE(Make(files, "/src/orphan.qcow2", "qcow2", "1M", "", "gone.qcow2").ok());
  ASSERT_TRUE(Make(files, "/src/fine.qcow2", "qcow2", "1M").ok());
  Namespace ns(files);
  ASSERT_TRUE(ns.Scan("/src", false).ok());
  EXPECT_EQ(ns.Find("orphan.qcow2"), -1);
  EXPECT_GE(ns.Find("fine.qcow2"), 0);
}

TEST(Namespace, FilesOfAnImageAreItsMembersNotImages) {
  test::MemFiles files;
  ASSERT_TRUE(Make(files, "/src/d.vmdk", "vmdk", "3G", "subformat=twoGbMaxExtentSparse").ok());
  ASSERT_TRUE(Make(files, "/src/q.qcow2", "qcow2", "1M", "data_file=q.data").ok());
  Namespace ns(files);
  ASSERT_TRUE(ns.Scan("/src", false).ok());
  EXPECT_EQ(ns.size(), 2u);  // neither the extents nor the data file
  const long d = ns.Find("d.vmdk"), q = ns.Find("q.qcow2");
  ASSERT_GE(d, 0);
  ASSERT_GE(q, 0);
  const ImageFiles df = ns.image(size_t(d)).files();
  ASSERT_EQ(df.members().size(), 2u);
  for (const ImageFiles::Member& m : df.members()) {
    EXPECT_EQ(m.role, FileRole::kExtent);
    EXPECT_EQ(ns.OwnerOf(m.path), d);
  }
  const ImageFiles qf = ns.image(size_t(q)).files();
  ASSERT_EQ(qf.members().size(), 1u);
  EXPECT_EQ(qf.members()[0].path, "/src/q.data");
  EXPECT_EQ(qf.members()[0].role, FileRole::kDataFile);
  EXPECT_EQ(ns.OwnerOf("/src/q.data"), q);
  EXPECT_EQ(ns.OwnerOf("/src/q.qcow2"), -1);  // an image's own file is no member
  EXPECT_GT(qf.MemberBytes(files) + df.MemberBytes(files), 0u);
}

TEST(Namespace, ResizeTakesTheFilesItAdds) {
  test::MemFiles files;
  ASSERT_TRUE(Make(files, "/src/d.vmdk", "vmdk", "1G", "subformat=twoGbMaxExtentSparse").ok());
  Namespace ns(files);
  ASSERT_TRUE(ns.Scan("/src", false).ok());
  const size_t d = size_t(ns.Find("d.vmdk"));
  ASSERT_EQ(ns.image(d).files().members().size(), 1u);
  auto chain = ns.GetChain(d);
  ASSERT_TRUE(chain.ok());
  auto size = ns.Resize(d, *chain.value(), "3G", false);
  ASSERT_TRUE(size.ok()) << size.status().ToString();
  EXPECT_EQ(ns.image(d).virtual_size.load(), uint64_t(3) << 30);
  const ImageFiles f = ns.image(d).files();
  ASSERT_EQ(f.members().size(), 2u);
  EXPECT_EQ(ns.OwnerOf(f.members()[1].path), long(d));
}

TEST(Namespace, ChangeWhileUnclaimedReopensAtTheClaim) {
  test::MemFiles files;
  ASSERT_TRUE(Make(files, "/src/a.qcow2", "qcow2", "1M").ok());
  ASSERT_TRUE(Make(files, "/src/b.qcow2", "qcow2", "1M").ok());
  Namespace ns(files);
  ASSERT_TRUE(ns.Scan("/src", false, /*claim_at_mount=*/false).ok());
  const size_t a = size_t(ns.Find("a.qcow2")), b = size_t(ns.Find("b.qcow2"));
  auto a0 = ns.GetChain(a), b0 = ns.GetChain(b);
  ASSERT_TRUE(a0.ok() && b0.ok());
  // Another program writes a.qcow2 (a leaked cluster at its end).
  auto fa = files.Get("/src/a.qcow2");
  ASSERT_TRUE(fa->Truncate(fa->Size() + 65536).ok());
  ASSERT_TRUE(ns.ClaimForWrite(a).ok());
  ASSERT_TRUE(ns.ClaimForWrite(b).ok());
  auto a1 = ns.GetChain(a), b1 = ns.GetChain(b);
  ASSERT_TRUE(a1.ok() && b1.ok());
  EXPECT_NE(a1.value(), a0.value());  // opened afresh: its cache may be stale
  EXPECT_EQ(b1.value(), b0.value());  // untouched: kept
}

TEST(Namespace, AddedAndRemovedFollowTheDirectory) {
  test::MemFiles files;
  ASSERT_TRUE(Make(files, "/src/a.qcow2", "qcow2", "1M").ok());
  Namespace ns(files);
  ASSERT_TRUE(ns.Scan("/src", false).ok());
  ASSERT_TRUE(Make(files, "/src/n.qcow2", "qcow2", "2M").ok());
  const long n = ns.Added("n.qcow2", true);
  ASSERT_GE(n, 0);
  EXPECT_EQ(ns.Find("n.qcow2"), n);
  EXPECT_EQ(ns.image(size_t(n)).virtual_size.load(), 2u << 20);
  files.Remove("/src/n.qcow2");
  EXPECT_EQ(ns.Removed("n.qcow2"), n);
  EXPECT_TRUE(ns.image(size_t(n)).removed);
  EXPECT_EQ(ns.Find("n.qcow2"), -1);
  EXPECT_EQ(ns.size(), 2u);  // its slot stays: an inode never names another image
}

}  // namespace
}  // namespace imgfs::fs
