#include "imagecore/memory.h"

#include <malloc.h>

#include "base/table_cache.h"

namespace imgfs {

uint64_t CachedMetadataBytes() { return TableCache::TotalBytes(); }

void ReturnFreedMemory() { malloc_trim(0); }

}  // namespace imgfs
