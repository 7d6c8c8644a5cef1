// File names of snapshot views: the name where it is unique and safe,
// otherwise "<id>-<name>" with '/' replaced, and never two alike.
#include <gtest/gtest.h>

#include <set>

#include "imagecore/ops.h"

namespace imgfs {
namespace {

SnapshotInfo Snap(const std::string& id, const std::string& name) {
  SnapshotInfo s;
  s.id = id;
  s.name = name;
  return s;
}

TEST(SnapshotFileNames, PlainUniqueNames) {
  auto n = ops::SnapshotFileNames({Snap("1", "before"), Snap("2", "after")});
  EXPECT_EQ(n, (std::vector<std::string>{"before.raw", "after.raw"}));
}

TEST(SnapshotFileNames, EmptyRepeatedAndSlash) {
  auto n = ops::SnapshotFileNames({Snap("1", ""), Snap("2", "a/b"), Snap("3", "x"), Snap("4", "x")});
  EXPECT_EQ(n, (std::vector<std::string>{"1-.raw", "2-a_b.raw", "3-x.raw", "4-x.raw"}));
}

TEST(SnapshotFileNames, PlainNameEqualToAnotherIdFormTakesItsIdForm) {
  auto n = ops::SnapshotFileNames({Snap("3", "twice"), Snap("4", "twice"), Snap("5", "3-twice")});
  EXPECT_EQ(n, (std::vector<std::string>{"3-twice.raw", "4-twice.raw", "5-3-twice.raw"}));
  EXPECT_EQ(std::set<std::string>(n.begin(), n.end()).size(), n.size());
}

}  // namespace
}  // namespace imgfs
