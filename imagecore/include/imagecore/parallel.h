// ParallelFor: run independent pieces of work (decompressing clusters) on
// all cores. The caller takes part, so it also works with one core.
#pragma once

#include <cstddef>
#include <functional>

namespace imgfs {

// Calls fn(i) for every i in [0, n), spread over a process-wide pool of
// worker threads, and returns when all calls have returned. fn must be
// safe to run concurrently for different i. If calls throw, the first
// exception is rethrown here, after every call has returned.
void ParallelFor(size_t n, const std::function<void(size_t)>& fn);

}  // namespace imgfs
