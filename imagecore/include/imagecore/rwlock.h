// RwLock: a reader-writer lock where a waiting writer goes first.
//
// glibc's default rwlock lets new readers in while a writer waits, so a
// steady stream of overlapping reads (FUSE threads) could hold a control
// operation (resize, snapshot, commit) off for ever. Readers must not take
// it twice on one thread: a writer waiting in between would deadlock them.
#pragma once

#include <pthread.h>

namespace imgfs {

class RwLock {
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

  void lock_shared() { pthread_rwlock_rdlock(&lock_); }
  void unlock_shared() { pthread_rwlock_unlock(&lock_); }
  void lock() { pthread_rwlock_wrlock(&lock_); }
  void unlock() { pthread_rwlock_unlock(&lock_); }

 private:
  pthread_rwlock_t lock_;
};

}  // namespace imgfs
