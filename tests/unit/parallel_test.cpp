#include <gtest/gtest.h>

#include <atomic>
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

}  // namespace
}  // namespace imgfs
