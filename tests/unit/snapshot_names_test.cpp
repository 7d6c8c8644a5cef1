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

// A name too long for a file name (qcow2 allows 65,535 bytes) gets a
// shortened one that fits, stays the same, and tells two such names apart.
TEST(SnapshotFileNames, TooLongNamesAreShortenedStably) {
  const std::string a(60000, 'a'), b = std::string(59999, 'a') + "b";
  auto n = ops::SnapshotFileNames({Snap("1", "ok"), Snap("2", a), Snap("3", b), Snap(std::string(300, '9'), "x")});
  ASSERT_EQ(n.size(), 4u);
  EXPECT_EQ(n[0], "ok.raw");
  for (const std::string& f : n) {
    EXPECT_LE(f.size(), 255u) << f;
    EXPECT_EQ(f.substr(f.size() - 4), ".raw");
  }
  EXPECT_EQ(n[1].rfind("2-aaaa", 0), 0u) << n[1];
  EXPECT_NE(n[1], n[2]);
  EXPECT_EQ(std::set<std::string>(n.begin(), n.end()).size(), n.size());
  EXPECT_EQ(ops::SnapshotFileNames({Snap("2", a)})[0], n[1]);  // the same whatever else is listed
}

// A cut never splits a UTF-8 character; a NUL byte is shown as '_'.
TEST(SnapshotFileNames, CutsWholeCharactersAndHidesNul) {
  std::string euro;
  for (int i = 0; i < 200; ++i) euro += "\xe2\x82\xac";
  auto n = ops::SnapshotFileNames({Snap("1", euro), Snap("2", std::string("a\0b", 3))});
  const std::string stem = n[0].substr(0, n[0].find('~'));
  EXPECT_EQ((stem.size() - 2) % 3, 0u) << stem.size();
  EXPECT_EQ(n[1], "2-a_b.raw");
}

}  // namespace
}  // namespace imgfs
