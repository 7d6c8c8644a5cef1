#include <gtest/gtest.h>

#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "imagecore/parallel.h"

namespace imgfs {
namespace {

TEST(ParallelFor, RunsEveryIndexExactlyOnce) {
  for (size_t n : {0u, 1u, 2u, 7u, 1000u}) {
    std::vector<std::atomic<int>> hits(n);
    ParallelFor(n, [&](size_t i) { hits[i]++; });
    for (size_t i = 0; i < n; ++i) EXPECT_EQ(hits[i].load(), 1) << "n=" << n << " i=" << i;
  }
}

TEST(ParallelFor, ManyCallersAtOnce) {
  // FUSE threads decode compressed clusters for different requests at once.
  std::atomic<long> total{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 6; ++t)
    callers.emplace_back([&] {
      for (int round = 0; round < 50; ++round) ParallelFor(16, [&](size_t i) { total += long(i); });
    });
  for (auto& c : callers) c.join();
  EXPECT_EQ(total.load(), 6L * 50 * (15 * 16 / 2));
}

TEST(ParallelFor, AnItemThatThrowsFailsTheCallOnly) {
  // Items throw on the caller's thread and on pool threads alike: the call
  // throws the first of them, after every other item has run, and the
  // process (and the pool) goes on.
  for (int round = 0; round < 20; ++round) {
    const size_t n = 64;
    std::atomic<size_t> ran{0};
    bool thrown = false;
    try {
      ParallelFor(n, [&](size_t i) {
        if (i % 7 == 3) throw std::runtime_error("item " + std::to_string(i));
        ran++;
      });
    } catch (const std::runtime_error& e) {
      thrown = std::string(e.what()).rfind("item ", 0) == 0;
    }
    EXPECT_TRUE(thrown);
    EXPECT_EQ(ran.load(), n - 9) << "every item that does not throw has run when the call returns";
  }
  std::atomic<int> after{0};
  ParallelFor(8, [&](size_t) { after++; });
  EXPECT_EQ(after.load(), 8);
}

}  // namespace
}  // namespace imgfs
