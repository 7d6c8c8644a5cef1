// Lookup, attributes and directory listings.
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "errno_map.h"
#include "imagecore/log.h"
#include "imagecore/format.h"
#include "imagecore/ops.h"
#include "notify.h"
#include "ops.h"
#include "permissions.h"

namespace imgfs::fs {

namespace {

constexpr double kAttrTimeout = 1.0;

struct DirEntry {
  std::string name;
  uint64_t ino;
  mode_t type;
};

void FromFile(const io::FileStat& f, struct stat* st) {
  st->st_uid = f.uid;
  st->st_gid = f.gid;
  st->st_atim = f.atime;
  st->st_mtim = f.mtime;
  st->st_ctim = f.ctime;
}

bool ListDirectory(FsContext& ctx, const NodeRef& node, std::vector<DirEntry>* out, int* err) {
  out->push_back({".", InoOf(node.kind, node.image), S_IFDIR});
  switch (node.kind) {
    case NodeKind::kRoot:
      out->push_back({"..", kRootIno, S_IFDIR});
      for (size_t i = 0; i < ctx.ns.size(); ++i)
        if (!ctx.ns.image(i).removed) out->push_back({ctx.ns.image(i).name, InoOf(NodeKind::kImageDir, i), S_IFDIR});
      return true;
    case NodeKind::kImageDir:
      out->push_back({"..", kRootIno, S_IFDIR});
      out->push_back({"disk.raw", InoOf(NodeKind::kDisk, node.image), S_IFREG});
      out->push_back({"info.json", InoOf(NodeKind::kInfo, node.image), S_IFREG});
      out->push_back({"ctl", InoOf(NodeKind::kCtl, node.image), S_IFREG});
      out->push_back({"layers", InoOf(NodeKind::kLayersDir, node.image), S_IFDIR});
      out->push_back({"partitions", InoOf(NodeKind::kPartitionsDir, node.image), S_IFDIR});
      if (HasSnapshotsDir(ctx, node.image))
        out->push_back({"snapshots", InoOf(NodeKind::kSnapshotsDir, node.image), S_IFDIR});
      return true;
    case NodeKind::kLayersDir: {
      out->push_back({"..", InoOf(NodeKind::kImageDir, node.image), S_IFDIR});
      auto chain = ctx.ns.GetChain(node.image);
      if (!chain.ok()) {
        *err = ErrnoOf(chain.status());
        return false;
      }
      for (size_t d = 0; d < chain.value()->depth() && d < kMaxLayers; ++d)
        out->push_back({Namespace::LayerName(*chain.value(), d), InoOf(NodeKind::kLayer, node.image, d), S_IFREG});
      return true;
    }
    case NodeKind::kSnapshotsDir: {
      out->push_back({"..", InoOf(NodeKind::kImageDir, node.image), S_IFDIR});
      auto names = ctx.ns.SnapshotNames(node.image);
      if (!names.ok()) {
        *err = ErrnoOf(names.status());
        return false;
      }
      for (size_t k = 0; k < names.value().size() && k < kMaxSnapshotViews; ++k)
        out->push_back({names.value()[k], InoOf(NodeKind::kSnapshot, node.image, k), S_IFREG});
      return true;
    }
    case NodeKind::kPartitionsDir: {
      out->push_back({"..", InoOf(NodeKind::kImageDir, node.image), S_IFDIR});
      auto parts = ctx.ns.Partitions(node.image);
      if (!parts.ok()) {
        *err = ErrnoOf(parts.status());
        return false;
      }
      for (const Partition& p : parts.value())
        if (p.number < kMaxPartitionNumber)
          out->push_back({PartitionName(p.number), InoOf(NodeKind::kPartition, node.image, p.number), S_IFREG});
      return true;
    }
    default:
      *err = ENOTDIR;
      return false;
  }
}

}  // namespace

std::string PartitionName(unsigned number) { return "p" + std::to_string(number) + ".raw"; }

Result<Partition> FindPartition(FsContext& ctx, size_t image, unsigned number) {
  IMGFS_ASSIGN_OR_RETURN(auto parts, ctx.ns.Partitions(image));
  for (const Partition& p : parts)
    if (p.number == number) return p;
  return NotFound("no partition " + std::to_string(number));
}

bool HasSnapshotsDir(FsContext& ctx, size_t image) {
  return ctx.ns.image(image).driver->caps.internal_snapshots;
}

std::string InfoJsonOf(FsContext& ctx, size_t image) {
  const ImageEntry& e = ctx.ns.image(image);
  auto info = ops::CollectInfo(e.path, e.format(), true, e.access);
  if (!info.ok()) return ops::InfoErrorJson(info.status().message());
  return ops::InfoJson(info.value(), true);
}

mode_t ChainPerm(FsContext& ctx, size_t image, const io::FileStat& top, size_t depth) {
  if (ctx.ns.image(image).removed) return top.mode & 0666;
  auto chain = ctx.ns.GetChain(image);
  if (!chain.ok()) return top.mode & 0666;  // nothing opens: the bits grant nothing more
  return ViewPerm(top, FilesBelowImage(*chain.value(), depth));
}

// Bytes the host stores for every file of image `e` (`main`: its image file).
uint64_t AllocatedOf(FsContext& ctx, const ImageEntry& e, const io::FileStat& main) {
  return main.allocated + e.files().MemberBytes(ctx.ns.files());
}

namespace {

// The image file of `e`, as the host describes it.
Result<io::FileStat> StatImageFile(FsContext& ctx, const ImageEntry& e) {
  auto f = ctx.ns.files().Stat(e.path);
  if (f.ok() || !e.removed) return f;
  // Gone from SOURCE, reached through a file still open: it stays usable
  // until closed (lookups no longer find it).
  io::FileStat gone;
  gone.mode = 0444;
  gone.uid = getuid();
  gone.gid = getgid();
  return gone;
}

// A layer view: its chain's size; a snapshot view: the size its table
// entry gives (the chain is opened by the first read). An errno on failure.
int StatChainView(FsContext& ctx, const NodeRef& node, mode_t file_perm, struct stat* st) {
  st->st_mode = S_IFREG | (file_perm & 0444);
  st->st_nlink = 1;
  if (node.kind == NodeKind::kSnapshot) {
    auto size = ctx.ns.SnapshotSize(node.image, node.depth);
    if (!size.ok()) return ErrnoOf(size.status());
    st->st_size = static_cast<off_t>(size.value());
    st->st_blocks = 0;  // a snapshot shares its clusters with the image: du counts them there
    return 0;
  }
  auto chain = ctx.ns.GetChain(node.image);
  if (!chain.ok()) return ErrnoOf(chain.status());
  if (node.depth >= chain.value()->depth()) return ENOENT;
  st->st_size = static_cast<off_t>(chain.value()->VirtualSize(node.depth));
  st->st_blocks = static_cast<blkcnt_t>(chain.value()->layer(node.depth).AllocatedBytes() / 512);
  return 0;
}

// Every node of an image; an errno on failure.
int StatImageNode(FsContext& ctx, const NodeRef& node, struct stat* st) {
  ImageEntry& e = ctx.ns.image(node.image);
  auto f = StatImageFile(ctx, e);
  if (!f.ok()) return ErrnoOf(f.status());
  FromFile(f.value(), st);
  // What a view may grant (see permissions.h): the disk's, or a layer's.
  const mode_t file_perm = ChainPerm(ctx, node.image, f.value(), node.kind == NodeKind::kLayer ? node.depth : 0);
  const mode_t disk_perm = e.read_only.is() ? file_perm & ~0222 : file_perm;
  st->st_nlink = 1;
  switch (node.kind) {
    case NodeKind::kSnapshotsDir:
      if (!HasSnapshotsDir(ctx, node.image)) return ENOENT;
      [[fallthrough]];
    case NodeKind::kImageDir:
    case NodeKind::kLayersDir:
    case NodeKind::kPartitionsDir:
      st->st_mode = S_IFDIR | DirPerm(file_perm);
      st->st_nlink = node.kind == NodeKind::kImageDir ? 3 : 2;
      return 0;
    case NodeKind::kDisk:
      st->st_mode = S_IFREG | disk_perm;
      st->st_size = static_cast<off_t>(e.virtual_size);
      st->st_blocks = static_cast<blkcnt_t>(AllocatedOf(ctx, e, f.value()) / 512);
      return 0;
    case NodeKind::kPartition: {
      auto p = FindPartition(ctx, node.image, unsigned(node.depth));
      if (!p.ok()) return ErrnoOf(p.status());
      st->st_mode = S_IFREG | disk_perm;
      st->st_size = static_cast<off_t>(p.value().length);
      st->st_blocks = 0;  // its clusters are counted on disk.raw
      return 0;
    }
    case NodeKind::kCtl:
      // Written to run commands, read for their state (direct I/O, so the
      // size says nothing; 0 like /proc files).
      st->st_mode = S_IFREG | (file_perm & (ctx.read_only ? 0444 : 0644));
      st->st_size = 0;
      return 0;
    case NodeKind::kInfo:
      st->st_mode = S_IFREG | (file_perm & 0444);
      st->st_size = static_cast<off_t>(InfoJsonOf(ctx, node.image).size());
      return 0;
    case NodeKind::kLayer:
    case NodeKind::kSnapshot: return StatChainView(ctx, node, file_perm, st);
    default: return ENOENT;
  }
}

}  // namespace

bool StatNode(FsContext& ctx, const NodeRef& node, struct stat* st, int* err) {
  std::memset(st, 0, sizeof *st);
  st->st_ino = InoOf(node.kind, node.image, node.depth);
  if (node.kind == NodeKind::kInvalid || (node.kind != NodeKind::kRoot && node.image >= ctx.ns.size())) {
    *err = ENOENT;
    return false;
  }
  if (node.kind == NodeKind::kRoot) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2 + ctx.ns.size();
    auto f = ctx.ns.files().Stat(ctx.ns.source());
    if (f.ok()) FromFile(f.value(), st);
    return true;
  }
  *err = StatImageNode(ctx, node, st);
  return *err == 0;
}

void OpLookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  FsContext& ctx = Ctx(req);
  NodeRef p = NodeOf(parent);
  NodeRef child;
  const std::string n(name);
  switch (p.kind) {
    case NodeKind::kRoot: {
      long i = ctx.ns.Find(n);
      if (i >= 0) child = {NodeKind::kImageDir, size_t(i), 0};
      break;
    }
    case NodeKind::kImageDir:
      if (n == "disk.raw") child = {NodeKind::kDisk, p.image, 0};
      else if (n == "info.json") child = {NodeKind::kInfo, p.image, 0};
      else if (n == "ctl") child = {NodeKind::kCtl, p.image, 0};
      else if (n == "layers") child = {NodeKind::kLayersDir, p.image, 0};
      else if (n == "partitions") child = {NodeKind::kPartitionsDir, p.image, 0};
      else if (n == "snapshots" && HasSnapshotsDir(ctx, p.image)) child = {NodeKind::kSnapshotsDir, p.image, 0};
      break;
    case NodeKind::kSnapshotsDir: {
      auto k = ctx.ns.FindSnapshot(p.image, n);
      if (!k.ok() && k.status().code() != Code::kNotFound) {
        fuse_reply_err(req, ErrnoOf(k.status()));
        return;
      }
      if (k.ok() && k.value() < kMaxSnapshotViews) child = {NodeKind::kSnapshot, p.image, k.value()};
      break;
    }
    case NodeKind::kPartitionsDir: {
      // "p<N>.raw"
      if (n.size() > 5 && n[0] == 'p' && n.compare(n.size() - 4, 4, ".raw") == 0) {
        const unsigned num = unsigned(std::strtoul(n.c_str() + 1, nullptr, 10));
        if (num && num < kMaxPartitionNumber && PartitionName(num) == n) child = {NodeKind::kPartition, p.image, num};
      }
      break;
    }
    case NodeKind::kLayersDir: {
      size_t d = std::strtoul(name, nullptr, 10);
      auto chain = ctx.ns.GetChain(p.image);
      if (!chain.ok()) {
        fuse_reply_err(req, ErrnoOf(chain.status()));
        return;
      }
      if (d < chain.value()->depth() && d < kMaxLayers && Namespace::LayerName(*chain.value(), d) == n)
        child = {NodeKind::kLayer, p.image, d};
      break;
    }
    default:
      fuse_reply_err(req, ENOTDIR);
      return;
  }
  fuse_entry_param ep{};
  int err = ENOENT;
  if (child.kind == NodeKind::kInvalid || !StatNode(ctx, child, &ep.attr, &err)) {
    fuse_reply_err(req, err);
    return;
  }
  ep.ino = ep.attr.st_ino;
  ep.attr_timeout = kAttrTimeout;
  ep.entry_timeout = kAttrTimeout;
  fuse_reply_entry(req, &ep);
}

void OpGetattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info*) {
  struct stat st;
  int err = ENOENT;
  if (!StatNode(Ctx(req), NodeOf(ino), &st, &err)) {
    fuse_reply_err(req, err);
    return;
  }
  fuse_reply_attr(req, &st, kAttrTimeout);
}

void OpSetattr(fuse_req_t req, fuse_ino_t ino, struct stat* attr, int to_set, fuse_file_info*) {
  FsContext& ctx = Ctx(req);
  NodeRef node = NodeOf(ino);
  struct stat st;
  int err = ENOENT;
  if (!StatNode(ctx, node, &st, &err)) {
    fuse_reply_err(req, err);
    return;
  }
  // Mode and owner follow the image file: a change the view cannot make
  // is refused, not reported done; the same values pass (cp -p, rsync -a).
  const bool new_mode = (to_set & FUSE_SET_ATTR_MODE) && (attr->st_mode & 07777) != (st.st_mode & 07777);
  const bool new_uid = (to_set & FUSE_SET_ATTR_UID) && attr->st_uid != st.st_uid;
  const bool new_gid = (to_set & FUSE_SET_ATTR_GID) && attr->st_gid != st.st_gid;
  if (new_mode || new_uid || new_gid) {
    fuse_reply_err(req, EPERM);
    return;
  }
  if (to_set & FUSE_SET_ATTR_SIZE) {
    if (node.kind == NodeKind::kCtl) {  // `echo cmd > ctl` truncates first
      fuse_reply_attr(req, &st, kAttrTimeout);
      return;
    }
    if (node.kind != NodeKind::kDisk) {
      const bool file = node.kind == NodeKind::kLayer || node.kind == NodeKind::kInfo ||
                        node.kind == NodeKind::kSnapshot || node.kind == NodeKind::kPartition;
      if (node.kind == NodeKind::kPartition && attr->st_size == st.st_size) {
        fuse_reply_attr(req, &st, kAttrTimeout);  // O_TRUNC-like no-op; a partition's size is the table's
        return;
      }
      fuse_reply_err(req, file ? EROFS : EISDIR);
      return;
    }
    if (attr->st_size != st.st_size) {
      // truncate grows the disk; it shrinks it only with -o allow_shrink,
      // so that a stray O_TRUNC-like size change never loses data.
      ImageEntry& e = ctx.ns.image(node.image);
      Status claim = ctx.read_only ? ReadOnly("mounted read-only") : ctx.ns.ClaimForWrite(node.image);
      if (!claim.ok()) {
        fuse_reply_err(req, claim.code() == Code::kBusy ? EBUSY : EROFS);
        return;
      }
      if (attr->st_size < st.st_size && !ctx.allow_shrink) {
        fuse_reply_err(req, EPERM);
        return;
      }
      auto chain = ctx.ns.GetChain(node.image);
      Status rs = chain.ok() ? ctx.ns.Resize(node.image, *chain.value(), std::to_string(attr->st_size), true).status()
                             : chain.status();
      InvalidateInode(ctx, InoOf(NodeKind::kLayer, node.image, 0));
      if (!rs.ok()) {
        fuse_reply_err(req, ErrnoOf(rs));
        return;
      }
      st.st_size = static_cast<off_t>(e.virtual_size.load());
    }
  }
  // Times follow the image file; accept and ignore.
  fuse_reply_attr(req, &st, kAttrTimeout);
}

// df on the mount: the disks' virtual sizes make up the total, what their
// image files hold is used, and the free space is SOURCE's (where new
// clusters go), capped so that used + free never exceeds the total.
void OpStatfs(fuse_req_t req, fuse_ino_t) {
  FsContext& ctx = Ctx(req);
  constexpr uint64_t kBlock = 4096;
  uint64_t total = 0, used = 0;
  for (size_t i = 0; i < ctx.ns.size(); ++i) {
    if (ctx.ns.image(i).removed) continue;
    total += ctx.ns.image(i).virtual_size;
    auto f = io::StatPath(ctx.ns.image(i).path);
    if (f.ok()) used += f.value().allocated;
  }
  struct statvfs sv {};
  sv.f_bsize = sv.f_frsize = kBlock;
  sv.f_namemax = 255;
  sv.f_blocks = total / kBlock;
  const uint64_t used_blocks = std::min<uint64_t>(sv.f_blocks, used / kBlock);
  uint64_t free_blocks = sv.f_blocks - used_blocks;
  auto space = io::StatFs(ctx.ns.source());
  if (space.ok()) free_blocks = std::min<uint64_t>(free_blocks, space.value().free / kBlock);
  sv.f_bfree = sv.f_bavail = free_blocks;
  sv.f_files = ctx.ns.size() * 8 + 1;
  sv.f_ffree = 0;
  if (ctx.read_only) sv.f_flag |= ST_RDONLY;
  fuse_reply_statfs(req, &sv);
}

void OpReaddir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info*) {
  std::vector<DirEntry> entries;
  int err = 0;
  if (!ListDirectory(Ctx(req), NodeOf(ino), &entries, &err)) {
    fuse_reply_err(req, err);
    return;
  }
  std::vector<char> buf(size);
  size_t used = 0;
  for (size_t i = static_cast<size_t>(off); i < entries.size(); ++i) {
    struct stat st{};
    st.st_ino = entries[i].ino;
    st.st_mode = entries[i].type;
    size_t need = fuse_add_direntry(req, buf.data() + used, size - used, entries[i].name.c_str(), &st,
                                    static_cast<off_t>(i + 1));
    if (need > size - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf.data(), used);
}

}  // namespace imgfs::fs
