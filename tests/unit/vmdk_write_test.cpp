// VMDK create and write: images made in memory (descriptor and extents
// through test::MemFiles), written, and rebuilt as a crash would leave
// them: every prefix of the writes (kill -9) and, after the last sync, any
// subset (power loss). Each must open, map only inside the file, and keep
// every byte a completed flush acknowledged.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "base/endian.h"
#include "formats/vmdk/vmdk_create.h"
#include "formats/vmdk/vmdk_image.h"
#include "test_util.h"

namespace imgfs {
namespace {

using test::SharedFile;

Status Create(test::MemFiles& files, const std::string& path, uint64_t size, const std::string& subformat,
              const std::string& zeroed = "off") {
  NewFiles out(files, path);
  CreateOptions o;
  o.size = size;
  o.options["subformat"] = subformat;
  o.options["zeroed_grain"] = zeroed;
  IMGFS_RETURN_IF_ERROR(vmdk::CreateFiles(out, o));
  return out.Commit();
}

std::unique_ptr<Image> Open(test::MemFiles& files, const std::string& path, bool writable) {
  OpenOptions o(writable);
  o.opener = &files;
  auto img = OpenImage(path, "vmdk", o);
  EXPECT_TRUE(img.ok()) << img.status().ToString();
  return img.ok() ? std::move(img).value() : nullptr;
}

TEST(VmdkCreate, EverySubformatOpensAndTakesWrites) {
  for (const char* sub : {"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse", "twoGbMaxExtentFlat"}) {
    test::MemFiles files;
    // Sparse: two extents when split (memory files hold only what is
    // written); flat: small, as its memory file holds every byte.
    const bool flat = std::string(sub).find("Flat") != std::string::npos;
    const uint64_t size = flat ? 8 << 20 : (uint64_t(2) << 30) + (1 << 20);
    ASSERT_TRUE(Create(files, "/c/d.vmdk", size, sub).ok()) << sub;
    auto img = Open(files, "/c/d.vmdk", true);
    ASSERT_TRUE(img) << sub;
    ASSERT_FALSE(img->read_only()) << sub << ": " << img->read_only_reason();
    std::vector<uint8_t> d(9000, 0x5c);
    const uint64_t at = flat ? (4 << 20) - 4000 : (uint64_t(2) << 30) - 4000;  // across the extents' boundary
    ASSERT_TRUE(img->Write(at, d.data(), d.size(), nullptr).ok()) << sub;
    ASSERT_TRUE(img->Flush().ok());
    img.reset();
    img = Open(files, "/c/d.vmdk", false);
    std::vector<uint8_t> got(d.size());
    ASSERT_TRUE(img->ReadOpaque(at, got.data(), got.size()).ok());
    EXPECT_EQ(got, d) << sub;
  }
}

// Fails to create any file whose name holds `bad`.
class FailingFiles final : public FileOpener {
 public:
  FailingFiles(test::MemFiles& inner, std::string bad) : inner_(inner), bad_(std::move(bad)) {}
  Result<std::unique_ptr<io::File>> Open(const std::string& p, bool w, const io::Access& a) const override {
    return inner_.Open(p, w, a);
  }
  Result<std::unique_ptr<io::File>> Create(const std::string& p, const io::Access& a, mode_t m) const override {
    if (p.find(bad_) != std::string::npos) return IoError(p, ENOSPC);
    return inner_.Create(p, a, m);
  }
  bool Exists(const std::string& p) const override { return inner_.Exists(p); }
  Status Rename(const std::string& a, const std::string& b) const override { return inner_.Rename(a, b); }
  void Remove(const std::string& p) const override { inner_.Remove(p); }

 private:
  test::MemFiles& inner_;
  std::string bad_;
};

TEST(VmdkCreate, AFailureLeavesNoFileBehind) {
  test::MemFiles files;
  FailingFiles failing(files, "-s002");
  {
    NewFiles out(failing, "/c/e.vmdk");
    CreateOptions o;
    o.size = (uint64_t(3) << 30);
    o.options["subformat"] = "twoGbMaxExtentSparse";
    EXPECT_FALSE(vmdk::CreateFiles(out, o).ok());
    EXPECT_FALSE(files.Paths().empty());  // s001 was made, under a temporary name
  }
  EXPECT_TRUE(files.Paths().empty()) << files.Paths()[0];
}

struct Recording : test::Recorded {
  size_t flushed_at = 0;
  std::vector<uint8_t> model_at_flush;
  uint64_t size = 0;
};

// Writes into a fresh monolithicSparse image: a first batch in the lower
// half, a flush, a second batch in the upper half, a flush.
// "PARAM/notables": the directories start empty, so the writes also make
// grain tables (qemu-img preallocates them all; other tools may not).
Recording Record(const std::string& param) {
  Recording rec;
  rec.size = 4 << 20;
  test::MemFiles files;
  const std::string zeroed = param.substr(0, param.find('/'));
  EXPECT_TRUE(Create(files, "/r/a.vmdk", rec.size, "monolithicSparse", zeroed).ok());
  auto f = files.Get("/r/a.vmdk");
  if (param.find("/notables") != std::string::npos) {
    uint8_t h[512], none[4] = {};
    EXPECT_TRUE(f->PRead(0, h, sizeof h).ok());
    EXPECT_TRUE(f->PWrite(LoadLE64(h + 56) * 512, none, 4).ok());
    EXPECT_TRUE(f->PWrite(LoadLE64(h + 48) * 512, none, 4).ok());
  }
  rec.initial = test::Contents(*f);
  auto log = std::make_shared<std::vector<SharedFile::Op>>();
  auto img = vmdk::VmdkImage::Open(std::make_unique<SharedFile>(f, log, "/r/a.vmdk"), OpenOptions(true));
  EXPECT_TRUE(img.ok()) << img.status().ToString();
  std::vector<uint8_t> model(rec.size, 0);
  std::mt19937_64 rng(5);
  for (int phase = 0; phase < 2; ++phase) {
    const uint64_t half = rec.size / 2;
    for (int i = 0; i < 40; ++i) {
      const uint64_t len = 1 + rng() % 150000;
      const uint64_t off = phase * half + rng() % (half - len);
      if (i % 7 == 3) {
        EXPECT_TRUE(img.value()->WriteZeroes(off, len, i % 2, nullptr).ok());
        std::memset(&model[off], 0, len);
      } else {
        std::vector<uint8_t> d(len, uint8_t(1 + rng() % 250));
        EXPECT_TRUE(img.value()->Write(off, d.data(), len, nullptr).ok());
        std::memcpy(&model[off], d.data(), len);
      }
    }
    EXPECT_TRUE(img.value()->Flush().ok());
    if (phase == 0) {
      rec.flushed_at = log->size();
      rec.model_at_flush = model;
    }
  }
  img.value().reset();
  rec.ops = *log;
  return rec;
}

// What qemu-img check asks of a sparse extent: every grain table and grain
// lies inside the file, past the metadata. "" if so.
std::string CheckSparse(const io::File& f) {
  uint8_t h[512];
  if (!f.PRead(0, h, sizeof h).ok()) return "unreadable header";
  const uint64_t sectors = LoadLE64(h + 12), grain = LoadLE64(h + 20), overhead = LoadLE64(h + 64);
  const uint32_t per = LoadLE32(h + 44);
  const bool zeroed = LoadLE32(h + 8) & 4;
  const uint64_t tables = (sectors + grain * per - 1) / (grain * per);
  const uint64_t end = (f.Size() + 511) / 512;
  for (const uint64_t dir : {LoadLE64(h + 56), LoadLE64(h + 48)}) {
    for (uint64_t t = 0; t < tables; ++t) {
      uint8_t e[4];
      (void)f.PRead(dir * 512 + t * 4, e, 4);
      const uint64_t gt = LoadLE32(e);
      if (!gt) continue;
      if (gt + per * 4 / 512 > end) return "grain table " + std::to_string(t) + " past the end";
      std::vector<uint8_t> table(per * 4);
      (void)f.PRead(gt * 512, table.data(), table.size());
      for (uint32_t i = 0; i < per; ++i) {
        const uint64_t g = LoadLE32(&table[i * 4]);
        if (g == 0 || (zeroed && g == 1)) continue;
        if (g < overhead || g + grain > end) return "grain " + std::to_string(t * per + i) + " at sector " + std::to_string(g);
      }
    }
  }
  return "";
}

void ExpectReadable(const Recording& rec, const std::shared_ptr<io::File>& f, size_t upto, const char* what) {
  ASSERT_EQ(CheckSparse(*f), "") << what << " after " << upto << " of " << rec.ops.size();
  auto img = vmdk::VmdkImage::Open(std::make_unique<SharedFile>(f, nullptr, "/r/a.vmdk"), OpenOptions(false));
  ASSERT_TRUE(img.ok()) << img.status().ToString();
  const std::vector<uint8_t> got = test::ReadLayer(*img.value());
  if (upto < rec.flushed_at) return;
  // The first half was acknowledged by the first flush, and the second
  // batch never touches it.
  const size_t half = rec.size / 2;
  EXPECT_TRUE(std::equal(got.begin(), got.begin() + half, rec.model_at_flush.begin()))
      << what << ": flushed bytes lost after " << upto << " of " << rec.ops.size();
}

class VmdkCrash : public ::testing::TestWithParam<const char*> {};

TEST_P(VmdkCrash, EveryPrefixOpensAndKeepsFlushedData) {
  const Recording rec = Record(GetParam());
  ASSERT_GT(rec.ops.size(), 20u);
  rec.EachPrefix([&](std::shared_ptr<io::File> f, size_t upto, const char* what) { ExpectReadable(rec, f, upto, what); });
}

TEST_P(VmdkCrash, PowerLossKeepsWhatWasSynced) {
  const Recording rec = Record(GetParam());
  size_t syncs = 0;
  for (const auto& op : rec.ops) syncs += op.kind == SharedFile::Op::kSync;
  ASSERT_GE(syncs, 3u);
  rec.EachPowerLoss(6, [&](std::shared_ptr<io::File> f, size_t upto, const char* what) { ExpectReadable(rec, f, upto, what); });
}

INSTANTIATE_TEST_SUITE_P(Vmdk, VmdkCrash, ::testing::Values("off", "on", "off/notables"));

}  // namespace
}  // namespace imgfs

namespace imgfs {
namespace {

// A child made on one parent, pointed at another (rebase -u), then at none.
TEST(VmdkSetBacking, RewritesTheHintAndParentCidTogether) {
  test::MemFiles files;
  ASSERT_TRUE(Create(files, "/b/one.vmdk", 1 << 20, "monolithicSparse").ok());
  ASSERT_TRUE(Create(files, "/b/two.vmdk", 1 << 20, "monolithicSparse").ok());
  auto one = Open(files, "/b/one.vmdk", false);
  auto two = Open(files, "/b/two.vmdk", false);
  ASSERT_TRUE(one && two);
  {
    NewFiles out(files, "/b/child.vmdk");
    CreateOptions o;
    o.size = 1 << 20;
    o.backing_file = "one.vmdk";
    o.backing_format = "vmdk";
    o.backing_image = one.get();
    ASSERT_TRUE(vmdk::CreateFiles(out, o).ok());
    ASSERT_TRUE(out.Commit().ok());
  }
  auto child = Open(files, "/b/child.vmdk", true);
  ASSERT_TRUE(child);
  EXPECT_TRUE(child->CheckParent(*one).ok());
  EXPECT_FALSE(child->CheckParent(*two).ok());
  ASSERT_TRUE(child->SetBacking("two.vmdk", "vmdk", two.get()).ok());
  EXPECT_FALSE(child->SetBacking("x.qcow2", "qcow2", nullptr).ok());
  child.reset();
  child = Open(files, "/b/child.vmdk", false);
  ASSERT_TRUE(child && child->Backing());
  EXPECT_EQ(child->Backing()->name, "two.vmdk");
  EXPECT_TRUE(child->CheckParent(*two).ok());
  child.reset();
  child = Open(files, "/b/child.vmdk", true);
  ASSERT_TRUE(child->SetBacking("", "", nullptr).ok());
  child.reset();
  child = Open(files, "/b/child.vmdk", false);
  EXPECT_FALSE(child->Backing());
  EXPECT_NE(test::Contents(*files.Get("/b/child.vmdk")).size(), 0u);
}

}  // namespace
}  // namespace imgfs

namespace imgfs {
namespace {

// What a shrink cuts off inside the last kept grain does not come back.
TEST(VmdkResize, ShrinkThenGrowShowsZerosPastTheCut) {
  test::MemFiles files;
  ASSERT_TRUE(Create(files, "/s/a.vmdk", 1 << 20, "monolithicSparse").ok());
  auto img = Open(files, "/s/a.vmdk", true);
  ASSERT_TRUE(img);
  std::vector<uint8_t> full(1 << 20, 0xaa);
  ASSERT_TRUE(img->Write(0, full.data(), full.size(), nullptr).ok());
  ASSERT_TRUE(img->Resize((1 << 20) - 32768, nullptr).ok());
  ASSERT_TRUE(img->Resize(1 << 20, nullptr).ok());
  std::vector<uint8_t> tail(32768), zeros(32768, 0);
  ASSERT_TRUE(img->ReadOpaque((1 << 20) - 32768, tail.data(), tail.size()).ok());
  EXPECT_EQ(tail, zeros);
  std::vector<uint8_t> kept(1000);
  ASSERT_TRUE(img->ReadOpaque((1 << 20) - 32768 - 1000, kept.data(), kept.size()).ok());
  EXPECT_EQ(kept, std::vector<uint8_t>(1000, 0xaa));
}

// A redundant directory that names a table over the primary directory:
// readable, but no write may land there.
TEST(VmdkImage, TablesOverMetadataMakeItReadOnly) {
  test::MemFiles files;
  ASSERT_TRUE(Create(files, "/s/b.vmdk", 1 << 20, "monolithicSparse").ok());
  auto f = files.Get("/s/b.vmdk");
  uint8_t h[512], e[4];
  ASSERT_TRUE(f->PRead(0, h, sizeof h).ok());
  StoreLE32(e, uint32_t(LoadLE64(h + 56)));  // the primary directory's sector
  ASSERT_TRUE(f->PWrite(LoadLE64(h + 48) * 512, e, 4).ok());
  auto img = Open(files, "/s/b.vmdk", true);
  ASSERT_TRUE(img);
  EXPECT_TRUE(img->read_only());
  EXPECT_NE(img->read_only_reason().find("grain directory"), std::string::npos) << img->read_only_reason();
  std::vector<uint8_t> d(512, 1);
  EXPECT_FALSE(img->Write(0, d.data(), d.size(), nullptr).ok());
}

}  // namespace
}  // namespace imgfs
