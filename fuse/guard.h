// No exception leaves a FUSE handler: a request whose handler throws
// (std::bad_alloc, or a library's exception on input nobody foresaw)
// fails with ENOMEM or EIO, the reason is logged, and the daemon serves on.
// Handlers reply last, so a throw comes before any reply of theirs.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <exception>
#include <functional>
#include <string>

namespace imgfs::fs {

// Logs the exception in flight (call inside a catch) and returns its errno.
int FailedRequest() noexcept;

template <auto Op>
struct Guard;

// Handlers that reply: an exception becomes an error reply.
template <typename... A, void (*Op)(fuse_req_t, A...)>
struct Guard<Op> {
  static void Call(fuse_req_t req, A... a) noexcept {
    try {
      Op(req, a...);
    } catch (...) {
      fuse_reply_err(req, FailedRequest());
    }
  }
};

// Runs `fn` on a thread of its own (control commands, the watcher): an
// exception is logged under `what` instead of ending the process.
void RunGuarded(const std::string& what, const std::function<void()>& fn) noexcept;

}  // namespace imgfs::fs
