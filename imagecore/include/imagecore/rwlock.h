// RwLock: a reader-writer lock where a waiting writer goes first.
//
// glibc's default rwlock lets new readers in while a writer waits, so a
// steady stream of overlapping reads (FUSE threads) could hold a control
// operation (resize, snapshot, commit) off for ever. Readers must not take
// it twice on one thread: a writer waiting in between would deadlock them.
#pragma once

#include <pthread.h>

#include "imagecore/thread_annotations.h"

namespace imgfs {

class CAPABILITY("rwlock") RwLock {
 public:
  RwLock() {
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&lock_, &attr);
    pthread_rwlockattr_destroy(&attr);
  }
  ~RwLock() { pthread_rwlock_destroy(&lock_); }
  RwLock(const RwLock&) = delete;
  RwLock& operator=(const RwLock&) = delete;

  void lock_shared() ACQUIRE_SHARED() { pthread_rwlock_rdlock(&lock_); }
  void unlock_shared() RELEASE_SHARED() { pthread_rwlock_unlock(&lock_); }
  void lock() ACQUIRE() { pthread_rwlock_wrlock(&lock_); }
  void unlock() RELEASE() { pthread_rwlock_unlock(&lock_); }

 private:
  pthread_rwlock_t lock_;
};

// Holds an RwLock shared, or exclusively, for a scope.
class SCOPED_CAPABILITY SharedLock {
 public:
  explicit SharedLock(RwLock& mu) ACQUIRE_SHARED(mu) : mu_(mu) { mu_.lock_shared(); }
  ~SharedLock() RELEASE() { mu_.unlock_shared(); }

 private:
  RwLock& mu_;
};
class SCOPED_CAPABILITY ExclusiveLock {
 public:
  explicit ExclusiveLock(RwLock& mu) ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~ExclusiveLock() RELEASE() { mu_.unlock(); }

 private:
  RwLock& mu_;
};

}  // namespace imgfs
