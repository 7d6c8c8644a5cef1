#include <gtest/gtest.h>

#include <cstring>
#include <map>

#include "base/table_cache.h"

namespace imgfs {
namespace {

TEST(TableCache, LoadsOnceAndEvictsCleanLru) {
  TableCache cache(16, 2);
  int loads = 0;
  auto load = [&](uint64_t off, uint8_t* buf) {
    ++loads;
    std::memset(buf, int(off), 16);
    return Status::OK();
  };
  auto no_flush = [] { return Status(Code::kIoError, "unexpected flush"); };
  EXPECT_EQ(cache.Get(1, load, no_flush).value()[0], 1);
  EXPECT_EQ(cache.Get(1, load, no_flush).value()[0], 1);
  EXPECT_EQ(loads, 1);
  ASSERT_TRUE(cache.Get(2, load, no_flush).ok());
  ASSERT_TRUE(cache.Get(3, load, no_flush).ok());  // evicts 1
  EXPECT_EQ(loads, 3);
  ASSERT_TRUE(cache.Get(1, load, no_flush).ok());
  EXPECT_EQ(loads, 4);
}

TEST(TableCache, DirtyTablesAreWrittenBeforeEviction) {
  TableCache cache(8, 2);
  std::map<uint64_t, uint8_t> disk;
  auto load = [&](uint64_t off, uint8_t* buf) {
    std::memset(buf, disk[off], 8);
    return Status::OK();
  };
  auto write = [&](uint64_t off, const uint8_t* buf) {
    disk[off] = buf[0];
    return Status::OK();
  };
  int flushes = 0;
  auto flush_all = [&] {
    ++flushes;
    return cache.WriteBack(write);
  };
  uint8_t* a = cache.Create(10, flush_all).value();
  a[0] = 42;
  uint8_t* b = cache.Create(20, flush_all).value();
  b[0] = 43;
  EXPECT_TRUE(cache.HasDirty());
  ASSERT_TRUE(cache.Get(30, load, flush_all).ok());  // all dirty: must flush first
  EXPECT_EQ(flushes, 1);
  EXPECT_EQ(disk[10], 42);
  EXPECT_EQ(disk[20], 43);
  EXPECT_EQ(cache.Get(10, load, flush_all).value()[0], 42);
}

}  // namespace
}  // namespace imgfs
