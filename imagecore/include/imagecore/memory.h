// What the process's image metadata costs in memory, for a limit to
// watch (the mount's memory keeper).
#pragma once

#include <cstdint>

namespace imgfs {

// Bytes all open images' metadata caches hold now (qcow2 L2 tables and
// refcount blocks, vmdk grain tables, vhdx BAT pages).
uint64_t CachedMetadataBytes();
// Hands memory that was freed back to the system (malloc keeps it
// otherwise), after caches were dropped.
void ReturnFreedMemory();

}  // namespace imgfs
