#include "notify.h"

#include "ops.h"

namespace imgfs::fs {

void InvalidateInode(FsContext& ctx, uint64_t ino) {
  // -ENOENT means the kernel has not seen the inode: nothing to drop.
  if (ctx.se) fuse_lowlevel_notify_inval_inode(ctx.se, ino, 0, 0);
}

void InvalidateEntry(FsContext& ctx, uint64_t parent, const std::string& name) {
  if (ctx.se) fuse_lowlevel_notify_inval_entry(ctx.se, parent, name.c_str(), name.size());
}

}  // namespace imgfs::fs
