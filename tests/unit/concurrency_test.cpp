// Many threads on one qcow2 image at once, as FUSE worker threads do:
// writers on disjoint stripes (so the expected content is well defined)
// interleaved with readers and flushes. Run under TSan to find races.
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "test_util.h"

namespace imgfs {
namespace {

TEST(Qcow2Concurrency, ParallelWritersReadersAndFlushes) {
  constexpr uint64_t kSize = 16 << 20;
  constexpr int kThreads = 4;
  auto f = test::NewQcow2(kSize, "cluster_size=4096");
  auto img = test::OpenShared(f, true);
  ASSERT_TRUE(img);
  std::vector<uint8_t> model(kSize, 0);
  std::atomic<int> errors{0};
  // Thread t owns every 64 KiB stripe s with s % kThreads == t; writes may
  // start anywhere in its stripes and cross cluster boundaries inside them.
  auto worker = [&](int t) {
    std::mt19937_64 rng(t + 1);
    std::vector<uint8_t> buf(64 << 10), back(64 << 10);
    for (int i = 0; i < 300; ++i) {
      const uint64_t stripe = (rng() % (kSize / (64 << 10) / kThreads)) * kThreads + t;
      const uint64_t in = rng() % (64 << 10);
      const uint64_t len = 1 + rng() % ((64 << 10) - in);
      const uint64_t off = stripe * (64 << 10) + in;
      std::memset(buf.data(), int(rng()), len);
      if (!img->Write(off, buf.data(), len, nullptr).ok()) ++errors;
      std::memcpy(&model[off], buf.data(), len);  // stripes are disjoint: no race on model
      // Read back through block status, as the filesystem does.
      uint64_t pos = off;
      while (pos < off + len) {
        Extent e;
        if (!img->BlockStatus(pos, off + len - pos, &e).ok()) {
          ++errors;
          break;
        }
        if (e.kind == ExtentKind::kData) {
          if (!e.file->PRead(e.host_offset, &back[pos - off], e.length).ok()) ++errors;
        } else {
          std::memset(&back[pos - off], 0, e.length);
        }
        pos += e.length;
      }
      if (std::memcmp(back.data(), buf.data(), len) != 0) ++errors;
      if (i % 97 == 0 && !img->Flush().ok()) ++errors;
    }
  };
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors.load(), 0);
  img.reset();
  uint64_t leaks = 1;
  EXPECT_EQ(test::CheckQcow2(*f, &leaks), "");
  EXPECT_EQ(leaks, 0u);
  auto again = test::OpenShared(f, false);
  std::vector<uint8_t> got = test::ReadLayer(*again);
  EXPECT_TRUE(got == model);
}

}  // namespace
}  // namespace imgfs
