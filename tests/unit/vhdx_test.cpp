// VHDX writes in memory, rebuilt as a crash would leave them: every prefix
// of the writes (kill -9) and, after each sync, any subset of what followed
// (power loss). Each must open, read-only (the log replayed in memory) and
// writable (replayed into the file) alike, place its blocks inside the file,
// and keep every byte a completed flush acknowledged. Dynamic disks and a
// differencing disk (sector bitmaps) both.
#include <gtest/gtest.h>

#include <cstring>
#include <random>

#include "base/endian.h"
#include "formats/vhdx/vhdx_create.h"
#include "formats/vhdx/vhdx_image.h"
#include "test_util.h"

namespace imgfs {
namespace {

using test::SharedFile;

// Reads a parent's content for copy-on-write.
class VectorReader final : public LayerReader {
 public:
  explicit VectorReader(const std::vector<uint8_t>& d) : d_(d) {}
  uint64_t VirtualSize() const override { return d_.size(); }
  Status Read(uint64_t off, void* buf, size_t len) const override {
    auto* p = static_cast<uint8_t*>(buf);
    for (size_t i = 0; i < len; ++i) p[i] = off + i < d_.size() ? d_[off + i] : 0;
    return Status::OK();
  }

 private:
  const std::vector<uint8_t>& d_;
};

std::shared_ptr<io::File> NewVhdx(uint64_t size, const std::string& block, const Image* parent = nullptr) {
  auto f = io::NewMemFile("/r/x.vhdx");
  CreateOptions o;
  o.size = size;
  o.options["block_size"] = block;
  if (parent) {
    o.backing_file = "p.vhdx";
    o.backing_format = "vhdx";
    o.backing_image = parent;
  }
  Status st = vhdx::CreateImage(*f, o);
  EXPECT_TRUE(st.ok()) << st.ToString();
  return std::shared_ptr<io::File>(std::move(f));
}

Result<std::unique_ptr<Image>> OpenVhdx(std::shared_ptr<io::File> f, bool writable,
                                        std::shared_ptr<std::vector<SharedFile::Op>> log = nullptr) {
  return vhdx::VhdxImage::Open(std::make_unique<SharedFile>(f, log, "/r/x.vhdx"), OpenOptions(writable));
}

// The disk as the chain reads it: what the layer does not hold, from `below`.
std::vector<uint8_t> ReadDisk(Image& img, const std::vector<uint8_t>& below) {
  std::vector<uint8_t> out = test::ReadLayer(img);
  if (out.empty()) return out;
  for (uint64_t off = 0; off < out.size();) {
    Extent e;
    if (!img.BlockStatus(off, out.size() - off, &e).ok()) return {};
    if (e.kind == ExtentKind::kUnallocated && !below.empty())
      std::memcpy(&out[off], &below[off], e.length);
    off += e.length;
  }
  return out;
}

struct Recording : test::Recorded {
  size_t flushed_at = 0;
  std::vector<uint8_t> model_at_flush;
  std::vector<uint8_t> parent;  // the parent's content ("diff"), else empty
  uint64_t size = 0;
};

// A first batch of writes in the lower half, a flush, a second batch in the
// upper half, a flush, a close.
Recording Record(const std::string& kind) {
  Recording rec;
  rec.size = 8 << 20;
  std::unique_ptr<Image> parent;
  if (kind == "diff") {
    auto pf = NewVhdx(rec.size, "1M");
    auto p = OpenVhdx(pf, true);
    EXPECT_TRUE(p.ok());
    rec.parent.assign(rec.size, 0);
    for (size_t i = 0; i < rec.size; ++i) rec.parent[i] = uint8_t(i * 7 + i / 4096);
    EXPECT_TRUE(p.value()->Write(0, rec.parent.data(), rec.size, nullptr).ok());
    p.value().reset();
    auto ro = OpenVhdx(pf, false);
    EXPECT_TRUE(ro.ok());
    parent = std::move(ro).value();
  }
  auto f = NewVhdx(rec.size, kind == "big" ? "4M" : "1M", parent.get());
  rec.initial = test::Contents(*f);
  auto log = std::make_shared<std::vector<SharedFile::Op>>();
  auto img = OpenVhdx(f, true, log);
  EXPECT_TRUE(img.ok()) << img.status().ToString();
  std::vector<uint8_t> model = rec.parent.empty() ? std::vector<uint8_t>(rec.size, 0) : rec.parent;
  VectorReader below(rec.parent);
  std::mt19937_64 rng(kind.size());
  for (int phase = 0; phase < 2; ++phase) {
    const uint64_t half = rec.size / 2;
    for (int i = 0; i < 30; ++i) {
      const uint64_t len = 1 + rng() % 300000;
      const uint64_t off = phase * half + rng() % (half - len);
      if (i % 7 == 3) {
        EXPECT_TRUE(img.value()->WriteZeroes(off, len, i % 2, parent ? &below : nullptr).ok());
        std::memset(&model[off], 0, len);
      } else {
        std::vector<uint8_t> d(len, uint8_t(1 + rng() % 250));
        EXPECT_TRUE(img.value()->Write(off, d.data(), len, parent ? &below : nullptr).ok());
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
  EXPECT_EQ(ReadDisk(*OpenVhdx(f, false).value(), rec.parent), model) << "after a clean close";
  return rec;
}

void ExpectSound(const Recording& rec, const std::shared_ptr<io::File>& f, size_t upto, const char* what) {
  const std::vector<uint8_t> before = test::Contents(*f);
  auto ro = OpenVhdx(f, false);
  ASSERT_TRUE(ro.ok()) << what << " after " << upto << ": " << ro.status().ToString();
  auto check = ro.value()->Check(RepairMode::kNone);
  ASSERT_TRUE(check.ok());
  // Damage is none; a log not yet replayed is reported as such, and only it.
  for (const std::string& m : check.value().messages)
    EXPECT_NE(m.find("log holds entries not yet applied"), std::string::npos) << what << " after " << upto << ": " << m;
  const std::vector<uint8_t> got = ReadDisk(*ro.value(), rec.parent);
  ASSERT_EQ(got.size(), rec.size) << what << " after " << upto;
  ro.value().reset();
  ASSERT_EQ(test::Contents(*f), before) << what << ": a read-only open changed the file";
  // Writable: the log replayed into the file reads the same.
  {
    auto rw = OpenVhdx(f, true);
    ASSERT_TRUE(rw.ok()) << rw.status().ToString();
    EXPECT_EQ(ReadDisk(*rw.value(), rec.parent), got) << what << ": replayed into the file, it reads otherwise";
  }
  auto again = OpenVhdx(f, false);
  ASSERT_TRUE(again.ok());
  auto clean = again.value()->Check(RepairMode::kNone);
  ASSERT_TRUE(clean.ok());
  EXPECT_EQ(clean.value().corruptions, 0u) << what << " after " << upto << ": " << clean.value().messages[0];
  if (upto < rec.flushed_at) return;
  const size_t half = rec.size / 2;
  EXPECT_TRUE(std::equal(got.begin(), got.begin() + half, rec.model_at_flush.begin()))
      << what << ": flushed bytes lost after " << upto << " of " << rec.ops.size();
}

class VhdxCrash : public ::testing::TestWithParam<const char*> {};

TEST_P(VhdxCrash, EveryPrefixOpensAndKeepsFlushedData) {
  const Recording rec = Record(GetParam());
  ASSERT_GT(rec.ops.size(), 20u);
  rec.EachPrefix([&](std::shared_ptr<io::File> f, size_t upto, const char* what) { ExpectSound(rec, f, upto, what); });
}

TEST_P(VhdxCrash, PowerLossKeepsWhatWasSynced) {
  const Recording rec = Record(GetParam());
  rec.EachPowerLoss(4, [&](std::shared_ptr<io::File> f, size_t upto, const char* what) { ExpectSound(rec, f, upto, what); });
}

INSTANTIATE_TEST_SUITE_P(Vhdx, VhdxCrash, ::testing::Values("dynamic", "big", "diff"));

// The writer stopped after its log entry was durable and before it wrote
// the entry in place: read-only, the image reads as replayed and the file
// stays as it is; a writable open replays it and clears the log.
TEST(VhdxLog, EntryWrittenButNotAppliedReplays) {
  const Recording rec = Record("dynamic");
  size_t cut = 0;
  for (size_t i = 0; i + 1 < rec.ops.size() && !cut; ++i)
    if (rec.ops[i].kind == SharedFile::Op::kWrite && rec.ops[i].data.size() >= 4 &&
        !std::memcmp(rec.ops[i].data.data(), "loge", 4) && rec.ops[i + 1].kind == SharedFile::Op::kSync)
      cut = i + 2;
  ASSERT_GT(cut, 0u) << "no log entry written";
  auto f = rec.Rebuild(cut);
  const std::vector<uint8_t> before = test::Contents(*f);
  auto ro = OpenVhdx(f, false);
  ASSERT_TRUE(ro.ok()) << ro.status().ToString();
  const std::vector<uint8_t> seen = ReadDisk(*ro.value(), {});
  ro.value().reset();
  EXPECT_EQ(test::Contents(*f), before);
  uint8_t h[2][80];
  ASSERT_TRUE(f->PRead(64 << 10, h[0], 80).ok());
  ASSERT_TRUE(f->PRead(128 << 10, h[1], 80).ok());
  const bool log_named = !std::all_of(h[0] + 48, h[0] + 64, [](uint8_t b) { return !b; }) ||
                         !std::all_of(h[1] + 48, h[1] + 64, [](uint8_t b) { return !b; });
  EXPECT_TRUE(log_named) << "the cut should leave a log to replay";
  { ASSERT_TRUE(OpenVhdx(f, true).ok()); }
  auto after = OpenVhdx(f, false);
  ASSERT_TRUE(after.ok());
  EXPECT_EQ(ReadDisk(*after.value(), {}), seen);
  EXPECT_EQ(std::vector<uint8_t>(rec.model_at_flush.begin(), rec.model_at_flush.begin() + rec.size / 2),
            std::vector<uint8_t>(seen.begin(), seen.begin() + rec.size / 2)) << "the replayed entry is the first flush's";
}

TEST(VhdxCreate, DifferencingDiskNamesItsParent) {
  auto pf = NewVhdx(4 << 20, "1M");
  auto p = OpenVhdx(pf, false);
  ASSERT_TRUE(p.ok());
  auto cf = NewVhdx(4 << 20, "2M", p.value().get());
  auto c = OpenVhdx(cf, false);
  ASSERT_TRUE(c.ok());
  auto ref = c.value()->Backing();
  ASSERT_TRUE(ref.has_value());
  EXPECT_EQ(ref->name, ".\\p.vhdx");
  EXPECT_EQ(ref->format, "vhdx");
  EXPECT_TRUE(c.value()->CheckParent(*p.value()).ok());
  // The parent written: its data write GUID changes, the child sees it.
  {
    auto w = OpenVhdx(pf, true);
    ASSERT_TRUE(w.ok());
    uint8_t b[512] = {1};
    ASSERT_TRUE(w.value()->Write(0, b, sizeof b, nullptr).ok());
  }
  auto p2 = OpenVhdx(pf, false);
  ASSERT_TRUE(p2.ok());
  EXPECT_FALSE(c.value()->CheckParent(*p2.value()).ok());
  EXPECT_EQ(vhdx::RelativeParentPath("../a/b.vhdx"), "..\\a\\b.vhdx");
  EXPECT_EQ(vhdx::RelativeParentPath("b.vhdx"), ".\\b.vhdx");
}

}  // namespace
}  // namespace imgfs
