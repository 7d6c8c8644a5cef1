// Crash safety of qcow2 writes: record every write and sync of a workload,
// then rebuild the file as a crash would leave it and check it.
//  - kill -9: the file holds exactly a prefix of the writes.
//  - power loss: everything before the last completed sync, plus any
//    subset of the writes issued after it.
// Either way the image must be consistent (leaks allowed), and data
// acknowledged by a completed Flush must read back.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "formats/qcow2/qcow2_format.h"
#include "test_util.h"

namespace imgfs {
namespace {

using test::SharedFile;

struct Recording : test::Recorded {
  size_t flushed_at = 0;          // index just past the first Flush's ops
  std::vector<uint8_t> model_at_flush;
};

Recording Record(const std::string& options, uint64_t size) {
  Recording rec;
  auto f = test::NewQcow2(size, options);
  rec.initial = test::Contents(*f);
  auto log = std::make_shared<std::vector<SharedFile::Op>>();
  std::vector<uint8_t> model(size, 0);
  std::mt19937_64 rng(99);
  auto img = test::OpenShared(f, true, log);
  for (int phase = 0; phase < 2; ++phase) {
    for (int i = 0; i < 60; ++i) {
      uint64_t len = 1 + rng() % 9000;
      uint64_t off = rng() % (size - len);
      std::vector<uint8_t> d(len, uint8_t(1 + rng() % 250));
      EXPECT_TRUE(img->Write(off, d.data(), len, nullptr).ok());
      std::memcpy(&model[off], d.data(), len);
    }
    EXPECT_TRUE(img->Flush().ok());
    if (phase == 0) {
      rec.flushed_at = log->size();
      rec.model_at_flush = model;
    }
  }
  img.reset();
  rec.ops = *log;
  return rec;
}

std::shared_ptr<io::File> Rebuild(const Recording& rec, size_t upto, const std::vector<bool>* keep = nullptr) {
  return rec.Rebuild(upto, keep);
}

void ExpectFlushedDataIntact(const Recording& rec, const std::shared_ptr<io::File>& f, size_t upto) {
  if (upto < rec.flushed_at) return;
  auto img = test::OpenShared(f, false);
  ASSERT_TRUE(img);
  // Every byte written before the flush that was not rewritten later must
  // read back; compare only where the final image still agrees with the
  // model at flush time (later writes may legitimately be half-applied).
  std::vector<uint8_t> got = test::ReadLayer(*img);
  ASSERT_EQ(got.size(), rec.model_at_flush.size());
  size_t differ = 0;
  for (size_t i = 0; i < got.size(); ++i) differ += got[i] != rec.model_at_flush[i] && got[i] == 0;
  EXPECT_EQ(differ, 0u) << "bytes acknowledged by flush read back as zeros";
}

// A clean close leaves no leaks; every prefix of the writes (kill -9)
// leaves a consistent image.
void ExpectEveryPrefixConsistent(const std::vector<uint8_t>& initial, const std::vector<SharedFile::Op>& ops) {
  Recording rec;
  rec.initial = initial;
  rec.ops = ops;
  uint64_t leaks = 1;
  ASSERT_EQ(test::CheckQcow2(*Rebuild(rec, rec.ops.size()), &leaks), "");
  EXPECT_EQ(leaks, 0u) << "a clean close must leave no leaks";
  const size_t step = std::max<size_t>(1, rec.ops.size() / 400);
  for (size_t k = 0; k <= rec.ops.size(); k += step)
    ASSERT_EQ(test::CheckQcow2(*Rebuild(rec, k)), "") << "after " << k << " of " << rec.ops.size() << " writes";
}

// As the next read-write open leaves a crashed image: a v3 image marked
// dirty is repaired at open (imgfs does it, and so does qemu). After that
// qemu-img check's COPIED rule holds too, not only the refcounts. v2 has no
// dirty bit: the COPIED window of snapshot control stays (README says so).
void ExpectEveryPrefixRepairsToLeaksOnly(const std::vector<uint8_t>& initial, const std::vector<SharedFile::Op>& ops) {
  Recording rec;
  rec.initial = initial;
  rec.ops = ops;
  const size_t step = std::max<size_t>(1, rec.ops.size() / 300);
  size_t repaired = 0;
  for (size_t k = 0; k <= rec.ops.size(); k += step) {
    auto f = Rebuild(rec, k);
    auto h = qcow2::Header::Read(*f);
    ASSERT_TRUE(h.ok());
    if (h->version < 3) return;
    if (h->incompatible_features & qcow2::kIncompatDirty) {
      auto img = test::OpenShared(f, true);
      ASSERT_TRUE(img) << "the repairing open failed after " << k << " writes";
      img.reset();
      ++repaired;
    }
    ASSERT_EQ(test::CheckQcow2(*f, nullptr, /*copied=*/true), "") << "after " << k << " of " << rec.ops.size()
                                                                   << " writes and a reopen";
  }
  EXPECT_GT(repaired, 0u) << "no prefix had the dirty bit set: the window went untested";
}

class CrashTest : public ::testing::TestWithParam<const char*> {};

TEST_P(CrashTest, EveryPrefixIsConsistent) {
  Recording rec = Record(GetParam(), 4 << 20);
  ASSERT_GT(rec.ops.size(), 10u);
  const size_t step = std::max<size_t>(1, rec.ops.size() / 300);
  for (size_t k = 0; k <= rec.ops.size(); k += step) {
    auto f = Rebuild(rec, k);
    ASSERT_EQ(test::CheckQcow2(*f), "") << "after " << k << " of " << rec.ops.size() << " writes";
    ExpectFlushedDataIntact(rec, f, k);
  }
}

TEST_P(CrashTest, PowerLossKeepsWhatWasSynced) {
  Recording rec = Record(GetParam(), 4 << 20);
  std::mt19937 rng(7);
  std::vector<size_t> syncs;
  for (size_t i = 0; i < rec.ops.size(); ++i)
    if (rec.ops[i].kind == SharedFile::Op::kSync) syncs.push_back(i);
  for (size_t s = 0; s < syncs.size(); ++s) {
    const size_t next = s + 1 < syncs.size() ? syncs[s + 1] : rec.ops.size();
    for (int trial = 0; trial < 8; ++trial) {
      std::vector<bool> keep(rec.ops.size(), true);
      for (size_t i = syncs[s] + 1; i < next; ++i) keep[i] = rng() % 2;
      auto f = Rebuild(rec, next, &keep);
      ASSERT_EQ(test::CheckQcow2(*f), "") << "power loss after sync #" << s;
    }
  }
}

// Snapshot control interleaved with writes: create, write (copy-on-write of
// shared tables and clusters), create, apply, delete. Every prefix of the
// writes must leave refcounts covering every reference of every walk.
TEST_P(CrashTest, SnapshotOperationsAreCrashSafe) {
  auto f = test::NewQcow2(2 << 20, GetParam());
  const std::vector<uint8_t> initial = test::Contents(*f);
  auto log = std::make_shared<std::vector<SharedFile::Op>>();
  {
    auto img = test::OpenShared(f, true, log);
    std::mt19937_64 rng(5);
    auto scribble = [&](int n) {
      for (int i = 0; i < n; ++i) {
        uint64_t len = 1 + rng() % 20000, off = rng() % ((2 << 20) - len);
        std::vector<uint8_t> d(len, uint8_t(1 + rng() % 250));
        ASSERT_TRUE(img->Write(off, d.data(), len, nullptr).ok());
      }
    };
    scribble(20);
    ASSERT_TRUE(img->CreateSnapshot("one").ok());
    scribble(20);
    ASSERT_TRUE(img->CreateSnapshot("two").ok());
    scribble(10);
    ASSERT_TRUE(img->ApplySnapshot("one").ok());
    scribble(10);
    ASSERT_TRUE(img->DeleteSnapshot("one").ok());
    scribble(5);
    ASSERT_TRUE(img->Flush().ok());
  }
  ExpectEveryPrefixConsistent(initial, *log);
  ExpectEveryPrefixRepairsToLeaksOnly(initial, *log);
}

// Zeroing, discarding, growing (with a new L1 table), shrinking and
// emptying, interleaved with writes: every prefix stays consistent.
TEST_P(CrashTest, ResizeAndZeroingAreCrashSafe) {
  auto f = test::NewQcow2(1 << 20, GetParam());
  const std::vector<uint8_t> initial = test::Contents(*f);
  auto log = std::make_shared<std::vector<SharedFile::Op>>();
  {
    auto img = test::OpenShared(f, true, log);
    std::vector<uint8_t> model(1 << 20, 0);
    std::mt19937_64 rng(11);
    auto scribble = [&](int n) {
      const uint64_t size = img->VirtualSize();
      for (int i = 0; i < n; ++i) {
        uint64_t len = 1 + rng() % 20000, off = rng() % (size - len);
        std::vector<uint8_t> d(len, uint8_t(1 + rng() % 250));
        ASSERT_TRUE(img->Write(off, d.data(), len, nullptr).ok());
        std::memcpy(&model[off], d.data(), len);
      }
    };
    auto zero = [&](uint64_t off, uint64_t len, bool unmap) {
      ASSERT_TRUE(img->WriteZeroes(off, len, unmap, nullptr).ok());
      std::memset(&model[off], 0, len);
    };
    auto resize = [&](uint64_t size) {
      ASSERT_TRUE(img->Resize(size, nullptr).ok());
      model.resize(size, 0);
    };
    scribble(20);
    zero(3000, 300000, true);
    zero(500000, 200000, false);
    resize(16 << 20);
    scribble(30);
    resize((3 << 20) + 4096);  // inside a cluster: its tail must read zeros later
    scribble(10);
    resize(5 << 20);
    scribble(10);
    EXPECT_EQ(test::ReadLayer(*img), model) << "content after zeroing and resizing";
    ASSERT_TRUE(img->MakeEmpty().ok());
    std::fill(model.begin(), model.end(), 0);
    scribble(10);
    ASSERT_TRUE(img->Flush().ok());
    EXPECT_EQ(test::ReadLayer(*img), model) << "content after emptying";
  }
  ExpectEveryPrefixConsistent(initial, *log);
}

// A discard punches the clusters it frees, once no pointer to them is
// durable: a snapshot that still holds them keeps them whole until it is
// deleted, and a crash anywhere (kill -9, or power loss dropping any of
// the writes and punches after a sync) leaves a consistent image whose
// listed snapshot reads as written and whose acknowledged data is intact.
TEST_P(CrashTest, DiscardPunchesOnlyWhatNothingUses) {
  constexpr uint64_t kSize = 2 << 20, kHalf = 1 << 20, kTail = kSize - (256 << 10);
  auto f = test::NewQcow2(kSize, GetParam());
  const std::vector<uint8_t> initial = test::Contents(*f);
  auto log = std::make_shared<std::vector<SharedFile::Op>>();
  std::vector<uint8_t> model(kSize, 0x11);
  size_t first_flush = 0;
  {
    auto img = test::OpenShared(f, true, log);
    auto write = [&](uint64_t off, uint64_t len, uint8_t v) {
      std::vector<uint8_t> d(len, v);
      ASSERT_TRUE(img->Write(off, d.data(), len, nullptr).ok());
      std::memset(&model[off], v, len);
    };
    write(0, kSize, 0x11);
    ASSERT_TRUE(img->Flush().ok());
    first_flush = log->size();
    ASSERT_TRUE(img->CreateSnapshot("s").ok());
    ASSERT_TRUE(img->WriteZeroes(0, kHalf, /*unmap=*/true, nullptr).ok());  // the snapshot still holds them
    std::memset(&model[0], 0, kHalf);
    write(kHalf, kHalf / 2, 0x22);  // copies on write: the old clusters are the snapshot's alone
    ASSERT_TRUE(img->Flush().ok());
    ASSERT_TRUE(img->DeleteSnapshot("s").ok());  // now they are free
    write(0, kHalf / 2, 0x33);                   // and reused
    ASSERT_TRUE(img->WriteZeroes(kHalf + kHalf / 2, kTail - kHalf - kHalf / 2, true, nullptr).ok());
    std::memset(&model[kHalf + kHalf / 2], 0, kTail - kHalf - kHalf / 2);
    ASSERT_TRUE(img->Flush().ok());
    EXPECT_EQ(test::ReadLayer(*img), model);
  }
  size_t punches = 0;
  for (const auto& op : *log) punches += op.kind == SharedFile::Op::kDiscard;
  EXPECT_GT(punches, 0u) << "no freed cluster was punched";
  test::Recorded rec{initial, *log};
  auto check = [&](std::shared_ptr<io::File> file, size_t k, const char* what) {
    ASSERT_EQ(test::CheckQcow2(*file), "") << what << " after " << k << " of " << rec.ops.size() << " operations";
    if (k < first_flush) return;
    auto img = test::OpenShared(file, false);
    ASSERT_TRUE(img) << what << " after " << k;
    const std::vector<uint8_t> got = test::ReadLayer(*img);
    ASSERT_EQ(got.size(), kSize);
    // Never rewritten after the first flush: intact at every point.
    for (uint64_t i = kTail; i < kSize; ++i) ASSERT_EQ(got[i], 0x11) << what << " after " << k << ", byte " << i;
    // Rewritten by copy-on-write: old or new, never a punched hole.
    for (uint64_t i = kHalf; i < kHalf + kHalf / 2; ++i)
      ASSERT_TRUE(got[i] == 0x11 || got[i] == 0x22) << what << " after " << k << ", byte " << i;
    for (const SnapshotInfo& s : img->Snapshots()) {
      auto snap = img->OpenSnapshot(s.id);
      ASSERT_TRUE(snap.ok()) << snap.status().ToString();
      const std::vector<uint8_t> in_snap = test::ReadLayer(*snap.value());
      ASSERT_EQ(std::count(in_snap.begin(), in_snap.end(), 0x11), ptrdiff_t(kSize))
          << what << " after " << k << ": a listed snapshot lost clusters";
    }
    if (k == rec.ops.size()) {
      EXPECT_EQ(got, model) << "the clean close";
    }
  };
  rec.EachPrefix(check);
  rec.EachPowerLoss(4, check);
}

// The bitmap names an image lists, in order ("" where none).
std::string BitmapNames(Image& img) {
  std::string out;
  for (const ImageInfo::Bitmap& b : img.Info().bitmaps) out += b.name + (b.flags.empty() ? "" : "=" + b.flags[0]) + ";";
  return out;
}

// qemu-img bitmap's steps between writes: after a crash at any point the
// image is consistent (its own check counts the bitmaps' clusters too),
// lists the bitmaps as before or after one whole command (never half of
// one), and every bitmap it lists that is not in_use reads.
class BitmapCrashTest : public ::testing::TestWithParam<const char*> {};

TEST_P(BitmapCrashTest, BitmapChangesAreCrashSafe) {
  auto f = test::NewQcow2(2 << 20, GetParam());
  const std::vector<uint8_t> initial = test::Contents(*f);
  auto log = std::make_shared<std::vector<SharedFile::Op>>();
  std::vector<std::string> states;
  {
    auto img = test::OpenShared(f, true, log);
    states.push_back(BitmapNames(*img));
    std::mt19937_64 rng(3);
    auto scribble = [&](int n) {
      for (int i = 0; i < n; ++i) {
        uint64_t len = 1 + rng() % 20000, off = rng() % ((2 << 20) - len);
        std::vector<uint8_t> d(len, uint8_t(1 + rng() % 250));
        ASSERT_TRUE(img->Write(off, d.data(), len, nullptr).ok());
      }
    };
    auto change = [&](const std::string& name, std::vector<BitmapChange> steps) {
      ASSERT_TRUE(img->ChangeBitmap(name, steps).ok()) << name;
      states.push_back(BitmapNames(*img));
    };
    BitmapChange add, merge, disable, clear, remove;
    add.kind = BitmapChange::kAdd;
    merge.kind = BitmapChange::kMerge;
    merge.source = "a";
    disable.kind = BitmapChange::kDisable;
    clear.kind = BitmapChange::kClear;
    remove.kind = BitmapChange::kRemove;
    change("a", {add});
    scribble(20);
    change("b", {add, merge, disable});
    scribble(10);
    change("a", {clear});
    scribble(10);
    change("b", {remove});
    change("a", {remove});
    scribble(5);
    ASSERT_TRUE(img->Flush().ok());
  }
  ExpectEveryPrefixConsistent(initial, *log);
  Recording rec;
  rec.initial = initial;
  rec.ops = *log;
  const size_t step = std::max<size_t>(1, rec.ops.size() / 300);
  for (size_t k = 0; k <= rec.ops.size(); k += step) {
    auto img = test::OpenShared(Rebuild(rec, k), false);
    ASSERT_TRUE(img) << "after " << k << " writes";
    auto check = img->Check(RepairMode::kNone);
    ASSERT_TRUE(check.ok());
    EXPECT_EQ(check->corruptions, 0u) << "after " << k << " of " << rec.ops.size() << " writes";
    // Names (and the first flag, "in-use" or "auto") as before or after a
    // whole command; in_use may show where writes were under way.
    std::string names = BitmapNames(*img), plain;
    for (const ImageInfo::Bitmap& b : img->Info().bitmaps) {
      if (std::find(b.flags.begin(), b.flags.end(), "in-use") != b.flags.end()) {
        plain += b.name + (b.flags.size() > 1 ? "=" + b.flags[1] : "") + ";";
        continue;
      }
      plain += b.name + (b.flags.empty() ? "" : "=" + b.flags[0]) + ";";
      EXPECT_TRUE(img->ReadBitmap(b.name).ok()) << b.name << " after " << k << " writes";
    }
    EXPECT_NE(std::find(states.begin(), states.end(), plain), states.end())
        << "bitmaps '" << names << "' after " << k << " writes are no whole command's result";
  }
}

INSTANTIATE_TEST_SUITE_P(Layouts, CrashTest, ::testing::Values("", "cluster_size=512", "compat=0.10,cluster_size=4k"));
// Bitmaps need compat=1.1.
INSTANTIATE_TEST_SUITE_P(Layouts, BitmapCrashTest, ::testing::Values("", "cluster_size=512"));

}  // namespace
}  // namespace imgfs
