// Open files: reads (spliced from the image file where the bytes lie
// verbatim), writes, fsync and SEEK_DATA/SEEK_HOLE.
#include <fcntl.h>
#include <linux/falloc.h>
#include <sys/uio.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <vector>

#include "errno_map.h"
#include "imagecore/access.h"
#include "imagecore/log.h"
#include "imagecore/ops.h"
#include "imagecore/parallel.h"
#include "imagecore/read_epoch.h"
#include "notify.h"
#include "ops.h"
#include "permissions.h"

namespace imgfs::fs {

namespace {

// Zero runs are sent from this buffer; it is never written, so the kernel
// may reference its pages while splicing.
constexpr size_t kZeroBytes = 1 << 20;
const char* ZeroBuffer() {
  static const char* zeros = static_cast<const char*>(std::calloc(1, kZeroBytes));
  return zeros;
}

OpenFile* Of(fuse_file_info* fi) { return reinterpret_cast<OpenFile*>(fi->fh); }

constexpr off_t kPrefetch = 2 << 20;

// The size of what the open file shows (a partition: its part of the disk).
uint64_t ViewSize(const OpenFile& of) {
  const uint64_t disk = of.chain->VirtualSize(of.depth);
  return of.shift >= disk ? 0 : std::min(of.limit, disk - of.shift);
}

// Pages other views cache of bytes a write just changed: disk.raw's for a
// write through a partition, open partitions' for one through disk.raw.
void InvalidateOtherViews(FsContext& ctx, const OpenFile& of, uint64_t disk_off, uint64_t len) {
  if (of.node.kind == NodeKind::kPartition) {
    if (ctx.se)
      fuse_lowlevel_notify_inval_inode(ctx.se, InoOf(NodeKind::kDisk, of.node.image), static_cast<off_t>(disk_off),
                                       static_cast<off_t>(len));
    return;
  }
  if (ctx.ns.image(of.node.image).open_partition_views.load() == 0) return;
  auto parts = ctx.ns.Partitions(of.node.image);
  if (!parts.ok()) return;
  for (const Partition& p : parts.value()) {
    if (disk_off + len <= p.offset || disk_off >= p.offset + p.length || !ctx.se) continue;
    const uint64_t from = std::max(disk_off, p.offset), to = std::min(disk_off + len, p.offset + p.length);
    fuse_lowlevel_notify_inval_inode(ctx.se, InoOf(NodeKind::kPartition, of.node.image, p.number),
                                     static_cast<off_t>(from - p.offset), static_cast<off_t>(to - from));
  }
}

void ReplyStatus(fuse_req_t req, const Status& st) { fuse_reply_err(req, ErrnoOf(st)); }

// A view opened before its image was locked (ctl lock) reads and writes no more.
bool LockedSinceOpen(fuse_req_t req, const OpenFile& of) {
  if (!of.chain || of.key_epoch == Ctx(req).ns.image(of.node.image).key_epoch.load()) return false;
  fuse_reply_err(req, EACCES);
  return true;
}

// Whether the caller may read every file below the image that a view from
// `depth` down reads. The bits the view shows are a bound per class of
// users (see permissions.h); this is the exact check, as the kernel would
// make it on each file.
bool CallerMayReadChain(fuse_req_t req, const Chain& chain, size_t depth) {
  const fuse_ctx* c = fuse_req_ctx(req);
  if (c->uid == 0) return true;
  // The image file too: the kernel checked the bits of the file at the
  // path, which need not be the one this chain serves.
  const auto files = chain.StatFiles(depth);
  bool all_public = true;
  for (const io::FileStat& f : files) all_public &= (f.mode & 0444) == 0444;
  if (all_public) return true;
  std::vector<gid_t> groups(64);
  int n = fuse_req_getgroups(req, int(groups.size()), groups.data());
  if (n > int(groups.size())) {
    groups.resize(size_t(n));
    n = fuse_req_getgroups(req, int(groups.size()), groups.data());
  }
  groups.resize(n > 0 ? std::min(size_t(n), groups.size()) : 0);
  return MayReadAll(files, c->uid, c->gid, groups);
}

// An encrypted layer without its key: its bytes are refused, not shown as
// noise (ctl's unlock gives the key; the log says which file lacks it).
int RefuseWithoutKey(const Chain& chain, size_t depth) {
  const std::string why = chain.KeyMissing(depth);
  if (why.empty()) return 0;
  Log(LogLevel::kWarning, "refused to open " + why);
  return EACCES;
}

}  // namespace

namespace {

// Opens disk.raw, a layer view or a partition view into `of`; an errno
// on failure.
int OpenDiskView(fuse_req_t req, FsContext& ctx, bool want_write, OpenFile& of, fuse_file_info* fi) {
  const NodeRef node = of.node;
  if (want_write && (node.kind == NodeKind::kLayer || ctx.ns.image(node.image).read_only.is())) return EROFS;
  if (want_write) {
    // The first writer claims the image (QEMU's locks); a VM that has it
    // makes it read-only for now, and user.imgfs.read_only says why.
    Status claim = ctx.ns.ClaimForWrite(node.image);
    if (!claim.ok()) {
      Log(LogLevel::kWarning, "refused to write " + ctx.ns.image(node.image).path + ": " + claim.message());
      return claim.code() == Code::kBusy ? EROFS : ErrnoOf(claim);
    }
  }
  auto chain = ctx.ns.GetChain(node.image);
  if (!chain.ok()) return ErrnoOf(chain.status());
  const size_t depth = node.kind == NodeKind::kLayer ? node.depth : 0;
  if (depth >= chain.value()->depth()) return ENOENT;
  if (!CallerMayReadChain(req, *chain.value(), depth)) return EACCES;
  if (int err = RefuseWithoutKey(*chain.value(), depth)) return err;
  of.key_epoch = ctx.ns.image(node.image).key_epoch.load();
  of.chain = chain.value();
  of.depth = depth;
  of.writable = want_write;
  if (node.kind == NodeKind::kPartition) {
    auto part = FindPartition(ctx, node.image, unsigned(node.depth));
    if (!part.ok()) return ErrnoOf(part.status());
    of.shift = part.value().offset;
    of.limit = part.value().length;
    ++ctx.ns.image(node.image).open_partition_views;
  }
  // disk.raw changes only through this mount, so its page cache stays
  // right across opens; a layer view shares bytes with disk.raw under
  // another inode, so it starts fresh at every open.
  fi->keep_cache = node.kind == NodeKind::kDisk;
  // A write-only descriptor cannot be mapped, so caching its writes buys
  // nothing: they go straight to us, saving the kernel a copy into the
  // cache (the kernel drops the range from the cache of other readers).
  // Nor does a writer that asked for O_DIRECT: through the cache path the
  // kernel would also ask us for security.capability before every write
  // (libfuse 3.14 cannot take that check over), one more round trip each.
  fi->direct_io = (fi->flags & O_ACCMODE) == O_WRONLY || (want_write && (fi->flags & O_DIRECT));
  return 0;
}

int OpenSnapshotView(fuse_req_t req, FsContext& ctx, bool want_write, OpenFile& of, fuse_file_info* fi) {
  if (want_write) return EROFS;
  auto chain = ctx.ns.GetSnapshotChain(of.node.image, of.node.depth);
  if (!chain.ok()) return ErrnoOf(chain.status());
  if (!CallerMayReadChain(req, *chain.value(), 0)) return EACCES;
  if (int err = RefuseWithoutKey(*chain.value(), 0)) return err;
  of.key_epoch = ctx.ns.image(of.node.image).key_epoch.load();
  of.chain = chain.value();
  of.depth = 0;
  fi->keep_cache = 1;  // a snapshot never changes while mounted
  return 0;
}

int OpenInfo(fuse_req_t req, FsContext& ctx, bool want_write, OpenFile& of, fuse_file_info* fi) {
  if (want_write) return EACCES;
  if (auto chain = ctx.ns.GetChain(of.node.image); chain.ok() && !CallerMayReadChain(req, *chain.value(), 0))
    return EACCES;  // it names and sizes every file of the chain
  of.content = InfoJsonOf(ctx, of.node.image);
  fi->direct_io = 1;
  return 0;
}

int OpenCtl(FsContext& ctx, bool want_write, fuse_file_info* fi) {
  // A read-only image still takes check and flush; the rest get EROFS.
  if (want_write && ctx.read_only) return EROFS;
  fi->direct_io = 1;  // every read shows the state now
  fi->nonseekable = 0;
  return 0;
}

}  // namespace

void OpOpen(fuse_req_t req, fuse_ino_t ino, fuse_file_info* fi) {
  FsContext& ctx = Ctx(req);
  const NodeRef node = NodeOf(ino);
  const bool want_write = (fi->flags & O_ACCMODE) != O_RDONLY;
  if (node.kind != NodeKind::kRoot && node.kind != NodeKind::kInvalid && node.image >= ctx.ns.size()) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if (node.kind != NodeKind::kRoot && node.kind != NodeKind::kInvalid) ctx.ns.Touch(node.image);
  auto of = std::make_unique<OpenFile>();
  of->node = node;
  int err = EISDIR;
  switch (node.kind) {
    case NodeKind::kDisk:
    case NodeKind::kPartition:
    case NodeKind::kLayer: err = OpenDiskView(req, ctx, want_write, *of, fi); break;
    case NodeKind::kSnapshot: err = OpenSnapshotView(req, ctx, want_write, *of, fi); break;
    case NodeKind::kCtl: err = OpenCtl(ctx, want_write, fi); break;
    case NodeKind::kInfo: err = OpenInfo(req, ctx, want_write, *of, fi); break;
    default: break;
  }
  if (err) {
    fuse_reply_err(req, err);
    return;
  }
  // O_TRUNC arrives here (atomic_o_trunc) and is ignored on purpose: a
  // disk never shrinks by being opened.
  fi->fh = reinterpret_cast<uint64_t>(of.release());
  if (fuse_reply_open(req, fi) != 0) delete Of(fi);  // interrupted: no release will come
}

void OpRelease(fuse_req_t req, fuse_ino_t, fuse_file_info* fi) {
  OpenFile* of = Of(fi);
  if (of->node.kind == NodeKind::kPartition) --Ctx(req).ns.image(of->node.image).open_partition_views;
  delete of;
  fuse_reply_err(req, 0);
}

namespace {

void ReplyText(fuse_req_t req, const std::string& text, size_t size, off_t off) {
  if (off < 0 || static_cast<size_t>(off) >= text.size()) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  fuse_reply_buf(req, text.data() + off, std::min(size, text.size() - static_cast<size_t>(off)));
}

// A read's reply: one buffer per resolved run, the image file itself for
// verbatim data (spliced by the kernel), the zero page for holes, memory
// otherwise. Runs only the driver can read (compressed clusters) are
// decoded together, on all cores.
struct ReadReply {
  struct Deferred {
    Resolved r;
    uint64_t pos;
    char* out;
  };
  std::vector<fuse_buf> bufs;
  std::vector<std::unique_ptr<char[]>> owned;
  std::vector<Deferred> deferred;

  // Adds the run `r` at disk offset `pos`; false if out of memory.
  bool Add(const Resolved& r, uint64_t pos) {
    fuse_buf b{};
    b.size = r.length;
    if (r.kind == Resolved::kData && r.file->fd() >= 0 && r.host_offset + r.length <= r.file->Size()) {
      b.flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY);
      b.fd = r.file->fd();
      b.pos = static_cast<off_t>(r.host_offset);
    } else if (r.kind == Resolved::kZero && r.length <= kZeroBytes) {
      b.mem = const_cast<char*>(ZeroBuffer());
    } else {
      owned.emplace_back(new (std::nothrow) char[r.length]);
      if (!owned.back()) return false;
      b.mem = owned.back().get();
      deferred.push_back({r, pos, owned.back().get()});
    }
    // Merged with the previous buffer when the bytes continue it.
    if (!bufs.empty()) {
      fuse_buf& p = bufs.back();
      const bool fd_cont = (p.flags & FUSE_BUF_IS_FD) && (b.flags & FUSE_BUF_IS_FD) && p.fd == b.fd &&
                           p.pos + static_cast<off_t>(p.size) == b.pos;
      const bool zero_cont = p.mem == ZeroBuffer() && b.mem == ZeroBuffer() && p.size + b.size <= kZeroBytes;
      if (fd_cont || zero_cont) {
        p.size += b.size;
        return true;
      }
    }
    bufs.push_back(b);
    return true;
  }
  Status Decode(const Chain& chain) {
    std::vector<Status> results(deferred.size());
    ParallelFor(deferred.size(), [&](size_t i) {
      results[i] = chain.ReadResolved(deferred[i].r, deferred[i].pos, deferred[i].out);
    });
    for (const Status& st : results) IMGFS_RETURN_IF_ERROR(st);
    return Status::OK();
  }
  void Send(fuse_req_t req) const {
    // All in memory (decoded clusters, zeros): one writev straight from
    // the buffers. Through libfuse's splice path memory is first copied
    // into a pipe and then again into the kernel's pages.
    bool any_fd = false;
    for (const fuse_buf& b : bufs) any_fd |= (b.flags & FUSE_BUF_IS_FD) != 0;
    if (!any_fd && bufs.size() < 512) {  // well under IOV_MAX with the header
      std::vector<iovec> iov(bufs.size());
      for (size_t i = 0; i < bufs.size(); ++i) iov[i] = {bufs[i].mem, bufs[i].size};
      fuse_reply_iov(req, iov.data(), static_cast<int>(iov.size()));
      return;
    }
    std::vector<char> storage(sizeof(fuse_bufvec) + bufs.size() * sizeof(fuse_buf));
    auto* vec = reinterpret_cast<fuse_bufvec*>(storage.data());
    vec->count = bufs.size();
    vec->idx = 0;
    vec->off = 0;
    std::memcpy(vec->buf, bufs.data(), bufs.size() * sizeof(fuse_buf));
    fuse_reply_data(req, vec, FUSE_BUF_SPLICE_MOVE);
  }
};

// Sequential readers come back for what follows: ask the host to start
// reading the image file past the last spliced run now, so its disk works
// while this reply travels (the kernel's own readahead on the image file is
// small and starts only when the next request arrives). Only for a reader
// that continues where it stopped: random readers would pay for 2 MiB they
// never read.
void PrefetchAfter(OpenFile& of, uint64_t off, uint64_t size, const ReadReply& reply) {
  const bool sequential = of.next_offset.exchange(off + size) == off;
  if (!sequential || reply.bufs.empty() || !(reply.bufs.back().flags & FUSE_BUF_IS_FD)) return;
  const fuse_buf& last = reply.bufs.back();
  posix_fadvise(last.fd, last.pos + static_cast<off_t>(last.size), kPrefetch, POSIX_FADV_WILLNEED);
}

}  // namespace

void OpRead(fuse_req_t req, fuse_ino_t, size_t size, off_t off, fuse_file_info* fi) {
  OpenFile* of = Of(fi);
  if (of->node.kind == NodeKind::kCtl) return ReplyText(req, Ctx(req).ns.image(of->node.image).control.State(), size, off);
  if (!of->chain) return ReplyText(req, of->content, size, off);  // info.json
  if (LockedSinceOpen(req, *of)) return;
  const Chain& chain = *of->chain;
  Ctx(req).ns.Touch(of->node.image);
  const uint64_t vsize = ViewSize(*of);
  if (off < 0 || static_cast<uint64_t>(off) >= vsize) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  // From resolving to the end of the reply (the kernel splices from the
  // image file): no cluster this read resolved is handed out again meanwhile.
  ReadScope reading;
  size = std::min<uint64_t>(size, vsize - static_cast<uint64_t>(off));
  const uint64_t begin = static_cast<uint64_t>(off) + of->shift;  // from here on: disk offsets
  const uint64_t end = begin + size;
  ReadReply reply;
  for (uint64_t pos = begin; pos < end;) {
    Resolved r;
    Status st = chain.Resolve(of->depth, pos, end - pos, &r);
    if (!st.ok()) return ReplyStatus(req, st);
    if (!reply.Add(r, pos)) return (void)fuse_reply_err(req, ENOMEM);
    pos += r.length;
  }
  PrefetchAfter(*of, begin, size, reply);
  if (Status st = reply.Decode(chain); !st.ok()) return ReplyStatus(req, st);
  reply.Send(req);
}

// A write to ctl: one command per line, run in order; the first that
// fails ends the write with its errno (its reason is in the state).
void WriteCtl(fuse_req_t req, const OpenFile& of, const char* buf, size_t size) {
  FsContext& ctx = Ctx(req);
  const std::string text(buf, size);
  size_t start = 0;
  while (start < text.size()) {
    size_t nl = text.find('\n', start);
    if (nl == std::string::npos) nl = text.size();
    const std::string line = text.substr(start, nl - start);
    start = nl + 1;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto cmd = ParseCtlLine(line);
    if (cmd.ok() && cmd.value().kind == Command::kUnlock) {
      // Read with the rights of whoever wrote the line, not the daemon's.
      const fuse_ctx* c = fuse_req_ctx(req);
      io::ScopedAccess as(io::AccessOf(c->uid, c->gid));
      auto key = as.ok() ? ReadKeyFile(cmd.value().arg) : Result<SecretBytes>(IoError("key file", EACCES));
      if (key.ok()) cmd.value().key = std::make_shared<const SecretBytes>(std::move(key).value());
      else cmd = key.status();
    }
    Control& control = ctx.ns.image(of.node.image).control;
    ctx.ns.Touch(of.node.image);
    Status st = cmd.ok() ? control.Run(ctx, of.node.image, cmd.value()) : cmd.status();
    if (!cmd.ok()) control.Refused(line, st);
    if (!st.ok()) {
      fuse_reply_err(req, ControlErrnoOf(st));
      return;
    }
  }
  fuse_reply_write(req, size);
}

void OpWrite(fuse_req_t req, fuse_ino_t, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  OpenFile* of = Of(fi);
  if (of->node.kind == NodeKind::kCtl) {
    WriteCtl(req, *of, buf, size);
    return;
  }
  if (!of->chain || !of->writable) {
    fuse_reply_err(req, EBADF);
    return;
  }
  if (LockedSinceOpen(req, *of)) return;
  if (off < 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  if (of->shift || of->limit != UINT64_MAX) {  // a partition: its end is a wall
    const uint64_t vsize = ViewSize(*of);
    if (static_cast<uint64_t>(off) >= vsize) {
      fuse_reply_err(req, ENOSPC);
      return;
    }
    size = std::min<uint64_t>(size, vsize - static_cast<uint64_t>(off));
  }
  const uint64_t disk_off = static_cast<uint64_t>(off) + of->shift;
  Ctx(req).ns.Touch(of->node.image);
  Status st = of->chain->Write(disk_off, buf, size);
  if (!st.ok()) {
    if (st.code() != Code::kNoSpace) Log(LogLevel::kError, "write failed: " + st.message());
    ReplyStatus(req, st);
    return;
  }
  InvalidateOtherViews(Ctx(req), *of, disk_off, size);
  fuse_reply_write(req, size);
}

// fallocate on disk.raw: punching a hole or zeroing a range frees or zeroes
// clusters (SEEK_HOLE then shows the holes); plain allocation past the end
// grows the disk, as it grows a file.
void OpFallocate(fuse_req_t req, fuse_ino_t, int mode, off_t off, off_t len, fuse_file_info* fi) {
  OpenFile* of = Of(fi);
  const bool part = of->node.kind == NodeKind::kPartition;
  if (!of->chain || (of->node.kind != NodeKind::kDisk && !part)) {
    fuse_reply_err(req, of->chain ? EROFS : EOPNOTSUPP);
    return;
  }
  if (!of->writable) {
    fuse_reply_err(req, EBADF);
    return;
  }
  if (LockedSinceOpen(req, *of)) return;
  if (off < 0 || len <= 0) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  FsContext& ctx = Ctx(req);
  ImageEntry& e = ctx.ns.image(of->node.image);
  ctx.ns.Touch(of->node.image);
  const uint64_t begin = static_cast<uint64_t>(off), end = begin + static_cast<uint64_t>(len);
  const uint64_t size = ViewSize(*of);
  if (part && !(mode & FALLOC_FL_KEEP_SIZE) && end > size) {
    fuse_reply_err(req, ENOSPC);  // a partition does not grow
    return;
  }
  const int known = FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE;
  if ((mode & ~known) || ((mode & FALLOC_FL_PUNCH_HOLE) && !(mode & FALLOC_FL_KEEP_SIZE))) {
    fuse_reply_err(req, EOPNOTSUPP);
    return;
  }
  Status st;
  if (!(mode & FALLOC_FL_KEEP_SIZE) && end > size) {
    st = ctx.ns.Resize(of->node.image, *of->chain, std::to_string(end), false).status();
    InvalidateInode(ctx, InoOf(NodeKind::kLayer, of->node.image, 0));
  }
  if (st.ok() && (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) && begin < size) {
    st = of->chain->WriteZeroes(begin + of->shift, std::min(end, size) - begin, (mode & FALLOC_FL_PUNCH_HOLE) != 0);
    if (st.ok()) InvalidateOtherViews(ctx, *of, begin + of->shift, std::min(end, size) - begin);
  }
  if (!st.ok()) Log(LogLevel::kWarning, e.name + ": fallocate: " + st.message());
  ReplyStatus(req, st);
}

void OpFsync(fuse_req_t req, fuse_ino_t, int, fuse_file_info* fi) {
  OpenFile* of = Of(fi);
  // Also through a descriptor opened read-only (`sync FILE` does that):
  // fsync makes durable whatever any descriptor wrote before it.
  Status st = of->chain && !Ctx(req).ns.image(of->node.image).read_only.is() ? of->chain->Flush() : Status::OK();
  if (!st.ok()) Log(LogLevel::kError, "fsync failed: " + st.message());
  fuse_reply_err(req, ErrnoOf(st));
}

void OpLseek(fuse_req_t req, fuse_ino_t, off_t off, int whence, fuse_file_info* fi) {
  OpenFile* of = Of(fi);
  if (!of->chain || (whence != SEEK_DATA && whence != SEEK_HOLE)) {
    fuse_reply_err(req, EINVAL);
    return;
  }
  if (LockedSinceOpen(req, *of)) return;
  const Chain& chain = *of->chain;
  Ctx(req).ns.Touch(of->node.image);
  const uint64_t size = ViewSize(*of);
  if (off < 0 || static_cast<uint64_t>(off) >= size) {
    fuse_reply_err(req, ENXIO);
    return;
  }
  // Disk offsets inside the loop, view offsets in the replies.
  uint64_t pos = static_cast<uint64_t>(off) + of->shift;
  const uint64_t end = of->shift + size;
  while (pos < end) {
    Resolved r;
    Status st = chain.Resolve(of->depth, pos, end - pos, &r);
    if (!st.ok()) {
      ReplyStatus(req, st);
      return;
    }
    const bool is_data = r.kind != Resolved::kZero;
    if (is_data == (whence == SEEK_DATA)) {
      fuse_reply_lseek(req, static_cast<off_t>(pos - of->shift));
      return;
    }
    pos += r.length;
  }
  // No more data: ENXIO. No hole before the end: the end is the hole.
  if (whence == SEEK_DATA) fuse_reply_err(req, ENXIO);
  else fuse_reply_lseek(req, static_cast<off_t>(size));
}

}  // namespace imgfs::fs
