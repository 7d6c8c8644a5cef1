// Status and Result<T>: how every fallible imagecore call reports failure.
// imagecore never throws; errno is read only in io/ and turned into errno
// again only in fuse/errno_map.cpp.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace imgfs {

enum class Code {
  kOk = 0,
  kNotFound,         // a file or an entry does not exist
  kInvalidArgument,  // the caller asked for something meaningless
  kCorrupt,          // the image contradicts its format
  kUnsupported,      // a valid feature imgfs does not implement (yet)
  kIoError,          // the OS failed; sys_errno() tells why
  kReadOnly,         // a write to something opened read-only
  kBusy,             // in use by someone else
  kNoSpace,          // past the end of a disk, or the host is full
  kNoKey,            // an encrypted image without its key, or with a wrong one
};

class [[nodiscard]] Status {
 public:
  Status() = default;  // OK, and free: no allocation.
  Status(Code code, std::string msg, int sys_errno = 0)
      : state_(std::make_shared<State>(State{code, sys_errno, std::move(msg)})) {}

  static Status OK() { return Status(); }
  bool ok() const { return state_ == nullptr; }
  Code code() const { return state_ ? state_->code : Code::kOk; }
  int sys_errno() const { return state_ ? state_->sys_errno : 0; }
  const std::string& message() const;
  std::string ToString() const;  // "corrupt: L2 table at 0x... is misaligned"

  // Returns a copy whose message is "prefix: old message".
  Status Prefixed(const std::string& prefix) const;

 private:
  struct State {
    Code code;
    int sys_errno;
    std::string msg;
  };
  std::shared_ptr<const State> state_;
};

inline Status NotFound(std::string m) { return Status(Code::kNotFound, std::move(m)); }
inline Status InvalidArgument(std::string m) { return Status(Code::kInvalidArgument, std::move(m)); }
inline Status Corrupt(std::string m) { return Status(Code::kCorrupt, std::move(m)); }
inline Status Unsupported(std::string m) { return Status(Code::kUnsupported, std::move(m)); }
inline Status ReadOnly(std::string m) { return Status(Code::kReadOnly, std::move(m)); }
inline Status NoSpace(std::string m) { return Status(Code::kNoSpace, std::move(m)); }
inline Status Busy(std::string m) { return Status(Code::kBusy, std::move(m)); }
Status IoError(const std::string& what, int sys_errno);

// A value or a non-OK Status; never both, never an OK status without value.
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT: implicit by design
  Result(Status status) : status_(std::move(status)) {  // NOLINT
    if (status_.ok()) status_ = Status(Code::kInvalidArgument, "Result built from OK status");
  }
  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

#define IMGFS_CONCAT_INNER(a, b) a##b
#define IMGFS_CONCAT(a, b) IMGFS_CONCAT_INNER(a, b)

// Returns the Status from the enclosing function when it is not OK.
#define IMGFS_RETURN_IF_ERROR(expr)            \
  do {                                         \
    ::imgfs::Status imgfs_st_ = (expr);        \
    if (!imgfs_st_.ok()) return imgfs_st_;     \
  } while (0)

// `IMGFS_ASSIGN_OR_RETURN(auto x, F());` : x = F().value() or return its status.
#define IMGFS_ASSIGN_OR_RETURN(lhs, expr)                      \
  auto IMGFS_CONCAT(imgfs_r_, __LINE__) = (expr);              \
  if (!IMGFS_CONCAT(imgfs_r_, __LINE__).ok())                  \
    return IMGFS_CONCAT(imgfs_r_, __LINE__).status();          \
  lhs = std::move(IMGFS_CONCAT(imgfs_r_, __LINE__)).value()

}  // namespace imgfs
