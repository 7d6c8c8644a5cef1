#include "imagecore/status.h"

#include <cstring>

namespace imgfs {

namespace {
const char* CodeName(Code c) {
  switch (c) {
    case Code::kOk: return "ok";
    case Code::kNotFound: return "not found";
    case Code::kInvalidArgument: return "invalid argument";
    case Code::kCorrupt: return "corrupt image";
    case Code::kUnsupported: return "unsupported";
    case Code::kIoError: return "I/O error";
    case Code::kReadOnly: return "read-only";
    case Code::kBusy: return "busy";
    case Code::kNoSpace: return "no space";
    case Code::kNoKey: return "no key";
  }
  return "error";
}
}  // namespace

const std::string& Status::message() const {
  static const std::string kEmpty;
  return state_ ? state_->msg : kEmpty;
}

std::string Status::ToString() const {
  if (ok()) return "ok";
  return std::string(CodeName(code())) + ": " + state_->msg;
}

Status Status::Prefixed(const std::string& prefix) const {
  if (ok()) return *this;
  return Status(code(), prefix + ": " + state_->msg, sys_errno());
}

Status IoError(const std::string& what, int sys_errno) {
  return Status(Code::kIoError, what + ": " + std::strerror(sys_errno), sys_errno);
}

}  // namespace imgfs
