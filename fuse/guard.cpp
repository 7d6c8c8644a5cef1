#include "guard.h"

#include <cerrno>
#include <new>

#include "imagecore/log.h"

namespace imgfs::fs {

namespace {
std::string WhatOf(std::exception_ptr e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::exception& x) {
    return x.what();
  } catch (...) {
    return "unknown exception";
  }
}
}  // namespace

int FailedRequest() noexcept {
  try {
    std::exception_ptr e = std::current_exception();
    bool oom = false;
    try {
      std::rethrow_exception(e);
    } catch (const std::bad_alloc&) {
      oom = true;
    } catch (...) {
    }
    Log(LogLevel::kError, std::string("request failed: ") + WhatOf(e));
    return oom ? ENOMEM : EIO;
  } catch (...) {
    return EIO;
  }
}

void RunGuarded(const std::string& what, const std::function<void()>& fn) noexcept {
  try {
    fn();
  } catch (...) {
    try {
      Log(LogLevel::kError, what + " failed: " + WhatOf(std::current_exception()));
    } catch (...) {
    }
  }
}

}  // namespace imgfs::fs
