// Telling the kernel that a view changed behind its caches.
//
// These are called from request handlers too. That is safe here because
// no handler that calls them holds a kernel lock the invalidation needs:
// inode invalidation waits only for pages under read (served by other
// worker threads), and entries are invalidated only in snapshots/, never
// from an operation on that directory.
#pragma once

#include <cstdint>
#include <string>

namespace imgfs::fs {

struct FsContext;

// Drops the attributes and cached pages of `ino`.
void InvalidateInode(FsContext& ctx, uint64_t ino);
// Drops the kernel's cached lookup of `name` in directory `parent`.
void InvalidateEntry(FsContext& ctx, uint64_t parent, const std::string& name);

}  // namespace imgfs::fs
