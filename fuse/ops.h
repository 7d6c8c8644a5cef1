// Low-level FUSE operations over the Namespace. One handler per request,
// exactly one reply each; no lock is held across a fuse_reply_* call.
#pragma once

#define FUSE_USE_VERSION 314
#include <fuse_lowlevel.h>

#include <atomic>
#include <memory>
#include <string>

#include "memory_keeper.h"
#include "namespace.h"

namespace imgfs::fs {

struct FsContext {
  Namespace ns;
  bool read_only = false;
  bool allow_shrink = false;   // -o allow_shrink: truncate may shrink disk.raw
  MemoryLimits memory;         // -o cache_limit=, cache_idle=
  fuse_session* se = nullptr;  // for invalidation notices; null until mounted
};

// What fi->fh points at for an open file.
struct OpenFile {
  NodeRef node;
  std::shared_ptr<Chain> chain;  // disk, layer, snapshot and partition views
  size_t depth = 0;
  // A partition view shows the disk's bytes [shift, shift + limit).
  uint64_t shift = 0;
  uint64_t limit = UINT64_MAX;
  std::atomic<uint64_t> next_offset{0};  // where a sequential reader reads next (disk offset)
  bool writable = false;
  uint32_t key_epoch = 0;        // the image's at open: a lock since ends the view's I/O
  std::string content;           // info.json, rendered at open
};

FsContext& Ctx(fuse_req_t req);
void FillOps(fuse_lowlevel_ops* ops);

// Directory side (ops_dir.cpp)
void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name);
void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info* fi);
void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
void OpStatfs(fuse_req_t req, fuse_ino_t ino);
// Attributes of a node; false if it does not exist (errno in *err).
bool StatNode(FsContext& ctx, const NodeRef& node, struct stat* st, int* err);
// The permission bits of views of image `image` that read its chain from
// `depth` down, for an image file `top` (see permissions.h).
mode_t ChainPerm(FsContext& ctx, size_t image, const io::FileStat& top, size_t depth);
std::string InfoJsonOf(FsContext& ctx, size_t image);
bool HasSnapshotsDir(FsContext& ctx, size_t image);
// "p<N>.raw", and partition N of an image's disk as its table says now.
std::string PartitionName(unsigned number);
Result<Partition> FindPartition(FsContext& ctx, size_t image, unsigned number);

// Extended attributes (ops_xattr.cpp)
void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size);
void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void OpSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int flags);
void OpRemovexattr(fuse_req_t req, fuse_ino_t ino, const char* name);

// File side (ops_file.cpp)
void OpFallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t off, off_t len, fuse_file_info* fi);
void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void OpRead(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info* fi);
void OpWrite(fuse_req_t req, fuse_ino_t ino, const char* buf, size_t size, off_t off, fuse_file_info* fi);
void OpFsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info* fi);
void OpRelease(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi);
void OpLseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, fuse_file_info* fi);

}  // namespace imgfs::fs
