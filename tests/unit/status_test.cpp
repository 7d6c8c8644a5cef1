#include <gtest/gtest.h>

#include "imagecore/status.h"

namespace imgfs {
namespace {

TEST(Status, OkIsFreeAndDefault) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), Code::kOk);
  EXPECT_EQ(s.ToString(), "ok");
}

TEST(Status, CarriesCodeMessageAndErrno) {
  Status s = IoError("read x", 5);
  EXPECT_FALSE(s.ok());
  EXPECT_EQ(s.code(), Code::kIoError);
  EXPECT_EQ(s.sys_errno(), 5);
  EXPECT_NE(s.message().find("read x"), std::string::npos);
  EXPECT_EQ(s.Prefixed("img").message().rfind("img: read x", 0), 0u);
}

TEST(Result, HoldsValueOrError) {
  Result<int> good(7);
  ASSERT_TRUE(good.ok());
  EXPECT_EQ(good.value(), 7);
  Result<int> bad(Corrupt("nope"));
  EXPECT_FALSE(bad.ok());
  EXPECT_EQ(bad.status().code(), Code::kCorrupt);
  Result<int> from_ok{Status::OK()};  // misuse becomes an error, never a value
  EXPECT_FALSE(from_ok.ok());
}

}  // namespace
}  // namespace imgfs
