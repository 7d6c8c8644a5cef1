// ceiling_fuse: the thinnest useful low-level libfuse3 server, used as the
// performance ceiling in tests/bench/bench.sh.
//
// It exposes exactly one read-only regular file, MOUNTPOINT/disk.raw, whose
// content is RAWFILE.  Reads are answered by handing libfuse a buffer that
// points at RAWFILE's fd (FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK), so with
// splice enabled the data goes file -> pipe -> /dev/fuse without being
// copied through this process.  Nothing else is implemented: no caching
// logic, no image format, no write path.  Anything a real image filesystem
// does on top of this is overhead relative to this ceiling.
//
// Usage: ceiling_fuse RAWFILE MOUNTPOINT
// Runs in the foreground; returns when the filesystem is unmounted or on
// SIGTERM / SIGINT / SIGHUP (which also unmounts).
//
// Build: g++ -O2 -std=c++17 ceiling_fuse.cpp $(pkg-config --cflags --libs fuse3)

#define FUSE_USE_VERSION 314

#include <fuse_lowlevel.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace {

constexpr fuse_ino_t kRootIno = FUSE_ROOT_ID;  // 1
constexpr fuse_ino_t kDiskIno = 2;
constexpr const char* kDiskName = "disk.raw";
constexpr double kTimeout = 86400.0;             // nothing ever changes
// 768 KiB: a 1 MiB reply does not fit a pipe of pipe-max-size (1 MiB) with
// its header, and libfuse would copy it instead of splicing (as in imgfs).
constexpr unsigned kMaxRead = 768u << 10;

int g_fd = -1;        // RAWFILE, opened O_RDONLY
off_t g_size = 0;     // its size, fixed for the lifetime of the mount
uid_t g_uid = 0;
gid_t g_gid = 0;

void fill_attr(fuse_ino_t ino, struct stat* st) {
  std::memset(st, 0, sizeof(*st));
  st->st_ino = ino;
  st->st_uid = g_uid;
  st->st_gid = g_gid;
  st->st_blksize = 4096;
  if (ino == kRootIno) {
    st->st_mode = S_IFDIR | 0555;
    st->st_nlink = 2;
  } else {
    st->st_mode = S_IFREG | 0444;
    st->st_nlink = 1;
    st->st_size = g_size;
    st->st_blocks = (g_size + 511) / 512;
  }
}

void op_init(void* /*userdata*/, struct fuse_conn_info* conn) {
  // Ask for splice in both directions that matter for reads.  SPLICE_MOVE is
  // a hint the kernel may ignore; SPLICE_WRITE is what makes fuse_reply_data
  // splice from our fd instead of read()+write().
  if (conn->capable & FUSE_CAP_SPLICE_WRITE) conn->want |= FUSE_CAP_SPLICE_WRITE;
  if (conn->capable & FUSE_CAP_SPLICE_MOVE) conn->want |= FUSE_CAP_SPLICE_MOVE;
  // libfuse 3.14 hands init a conn whose max_read is 0 and then refuses the
  // mount unless init leaves it equal to the "-o max_read=" value the session
  // was created with (see main), so it has to be set here to the same value.
  conn->max_read = kMaxRead;
}

void op_lookup(fuse_req_t req, fuse_ino_t parent, const char* name) {
  if (parent != kRootIno || std::strcmp(name, kDiskName) != 0) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct fuse_entry_param e;
  std::memset(&e, 0, sizeof(e));
  e.ino = kDiskIno;
  e.generation = 1;
  e.attr_timeout = kTimeout;
  e.entry_timeout = kTimeout;
  fill_attr(kDiskIno, &e.attr);
  fuse_reply_entry(req, &e);
}

void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* /*fi*/) {
  if (ino != kRootIno && ino != kDiskIno) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  struct stat st;
  fill_attr(ino, &st);
  fuse_reply_attr(req, &st, kTimeout);
}

void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  if (ino != kRootIno) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  fuse_reply_open(req, fi);
}

void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
                struct fuse_file_info* /*fi*/) {
  if (ino != kRootIno) {
    fuse_reply_err(req, ENOTDIR);
    return;
  }
  // Three fixed entries; "off" is the index of the next entry to return.
  struct Ent { const char* name; fuse_ino_t ino; mode_t mode; };
  static const Ent ents[] = {
      {".", kRootIno, S_IFDIR}, {"..", kRootIno, S_IFDIR}, {kDiskName, kDiskIno, S_IFREG}};
  char buf[512];
  size_t used = 0;
  size_t cap = size < sizeof(buf) ? size : sizeof(buf);
  for (off_t i = off; i < 3; ++i) {
    struct stat st;
    std::memset(&st, 0, sizeof(st));
    st.st_ino = ents[i].ino;
    st.st_mode = ents[i].mode;
    size_t need = fuse_add_direntry(req, buf + used, cap - used, ents[i].name, &st, i + 1);
    if (need > cap - used) break;
    used += need;
  }
  fuse_reply_buf(req, buf, used);
}

void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info* fi) {
  if (ino == kRootIno) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  if (ino != kDiskIno) {
    fuse_reply_err(req, ENOENT);
    return;
  }
  if ((fi->flags & O_ACCMODE) != O_RDONLY) {
    fuse_reply_err(req, EROFS);
    return;
  }
  fi->keep_cache = 1;  // content never changes behind the kernel's back
  fuse_reply_open(req, fi);
}

void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
             struct fuse_file_info* /*fi*/) {
  if (ino != kDiskIno) {
    fuse_reply_err(req, EISDIR);
    return;
  }
  if (off >= g_size) {
    fuse_reply_buf(req, nullptr, 0);
    return;
  }
  if (static_cast<off_t>(size) > g_size - off) size = static_cast<size_t>(g_size - off);

  // One fd-backed buffer; libfuse splices (or, failing that, preads) it.
  struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
  bv.buf[0].flags = static_cast<fuse_buf_flags>(FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK);
  bv.buf[0].fd = g_fd;
  bv.buf[0].pos = off;
  fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
}

void op_statfs(fuse_req_t req, fuse_ino_t /*ino*/) {
  struct statvfs sv;
  std::memset(&sv, 0, sizeof(sv));
  sv.f_bsize = 4096;
  sv.f_frsize = 4096;
  sv.f_blocks = static_cast<fsblkcnt_t>((g_size + 4095) / 4096);
  sv.f_files = 2;
  sv.f_namemax = 255;
  fuse_reply_statfs(req, &sv);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s RAWFILE MOUNTPOINT\n", argv[0]);
    return 2;
  }
  const char* rawfile = argv[1];
  const char* mountpoint = argv[2];

  g_fd = open(rawfile, O_RDONLY | O_CLOEXEC);
  if (g_fd < 0) {
    std::fprintf(stderr, "ceiling_fuse: open %s: %s\n", rawfile, std::strerror(errno));
    return 1;
  }
  struct stat st;
  if (fstat(g_fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    std::fprintf(stderr, "ceiling_fuse: %s: not a regular file\n", rawfile);
    return 1;
  }
  g_size = st.st_size;
  g_uid = getuid();
  g_gid = getgid();

  struct fuse_lowlevel_ops ops;
  std::memset(&ops, 0, sizeof(ops));
  ops.init = op_init;
  ops.lookup = op_lookup;
  ops.getattr = op_getattr;
  ops.opendir = op_opendir;
  ops.readdir = op_readdir;
  ops.open = op_open;
  ops.read = op_read;
  ops.statfs = op_statfs;

  // max_read given here (not only in init) so the kernel and libfuse agree.
  char opt_buf[128];
  std::snprintf(opt_buf, sizeof(opt_buf), "ro,max_read=%u,fsname=ceiling_fuse,subtype=ceiling",
                kMaxRead);
  char arg0[] = "ceiling_fuse";
  char arg_o[] = "-o";
  char* fargv[] = {arg0, arg_o, opt_buf, nullptr};
  struct fuse_args args = FUSE_ARGS_INIT(3, fargv);

  int rc = 1;
  struct fuse_session* se = fuse_session_new(&args, &ops, sizeof(ops), nullptr);
  if (se == nullptr) {
    std::fprintf(stderr, "ceiling_fuse: fuse_session_new failed\n");
    return 1;
  }
  if (fuse_set_signal_handlers(se) != 0) {
    std::fprintf(stderr, "ceiling_fuse: cannot install signal handlers\n");
    fuse_session_destroy(se);
    return 1;
  }
  if (fuse_session_mount(se, mountpoint) != 0) {
    std::fprintf(stderr, "ceiling_fuse: mount on %s failed\n", mountpoint);
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return 1;
  }

  struct fuse_loop_config* cfg = fuse_loop_cfg_create();
  fuse_loop_cfg_set_clone_fd(cfg, 0);
  fuse_loop_cfg_set_max_threads(cfg, 16);
  fuse_loop_cfg_set_idle_threads(cfg, 4);
  rc = fuse_session_loop_mt(se, cfg) == 0 ? 0 : 1;
  fuse_loop_cfg_destroy(cfg);

  fuse_session_unmount(se);
  fuse_remove_signal_handlers(se);
  fuse_session_destroy(se);
  fuse_opt_free_args(&args);
  close(g_fd);
  return rc;
}
