// Mutex: std::mutex as a capability the compiler can check (see
// thread_annotations.h); MutexLock holds one for a scope, UniqueMutexLock
// too, and lends it to a condition variable.
#pragma once

#include <mutex>

#include "imagecore/thread_annotations.h"

namespace imgfs {

class CAPABILITY("mutex") Mutex {
 public:
  void lock() ACQUIRE() { mu_.lock(); }
  void unlock() RELEASE() { mu_.unlock(); }
  std::mutex& native() { return mu_; }
  // Tells the analysis that the caller holds it (a callback run under the
  // lock, which the analysis cannot follow into); checks nothing.
  void AssertHeld() const ASSERT_CAPABILITY(this) {}

 private:
  std::mutex mu_;
};

class SCOPED_CAPABILITY MutexLock {
 public:
  explicit MutexLock(Mutex& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexLock() RELEASE() { mu_.unlock(); }
  MutexLock(const MutexLock&) = delete;
  MutexLock& operator=(const MutexLock&) = delete;

 private:
  Mutex& mu_;
};

// For condition variables: cv.wait(lock.native()) releases and retakes it,
// which the analysis sees as held throughout. It may be let go and taken
// again within its scope.
class SCOPED_CAPABILITY UniqueMutexLock {
 public:
  explicit UniqueMutexLock(Mutex& mu) ACQUIRE(mu) : lock_(mu.native()) {}
  ~UniqueMutexLock() RELEASE() {}
  void lock() ACQUIRE() { lock_.lock(); }
  void unlock() RELEASE() { lock_.unlock(); }
  std::unique_lock<std::mutex>& native() { return lock_; }

 private:
  std::unique_lock<std::mutex> lock_;
};

}  // namespace imgfs
