// Read epochs: when may a freed host cluster be handed out again?
//
// A read resolves guest bytes to a host offset under the image's locks and
// then reads (or has the kernel splice) them after dropping the locks. If
// the cluster were freed and reused meanwhile, the reader would get another
// disk's bytes. So every such read holds a ReadScope from before it resolves
// until its bytes are gone; a cluster freed with tag T = CloseReadEpoch()
// is reused only once T < OldestOpenRead(): no scope that entered at or
// before T is still open. Readers never wait; a reuse that is not yet safe
// simply takes a cluster at the end of the file instead.
//
// Thread safety: all of it, lock-free for readers (one slot per thread).
#pragma once

#include <cstdint>

namespace imgfs {

class ReadScope {
 public:
  ReadScope();
  ~ReadScope();
  ReadScope(const ReadScope&) = delete;
  ReadScope& operator=(const ReadScope&) = delete;

 private:
  bool outer_ = false;  // scopes nest; the outermost one records the epoch
  bool overflow_ = false;
  uint64_t entered_ = 0;
};

// Ends the current epoch: what is freed now gets the returned tag.
uint64_t CloseReadEpoch();
// The epoch the oldest open scope entered at (UINT64_MAX: none is open).
uint64_t OldestOpenRead();

}  // namespace imgfs
