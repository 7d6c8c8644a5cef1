// Mounting: scan SOURCE, create the FUSE session, daemonize, serve with a
// multithreaded loop, and on the way out unmount and flush every image.
#include <fcntl.h>
#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <functional>
#include <memory>
#include <cstring>
#include <ctime>
#include <mutex>
#include <string>
#include <vector>

#include "capabilities.h"
#include "imagecore/keyring.h"
#include "imagecore/log.h"
#include "imagecore/secret.h"
#include "imagecore/size.h"
#include "imgfs_fuse.h"
#include "guard.h"
#include "ops.h"
#include "mountinfo.h"
#include "pidfile.h"
#include "watcher.h"

namespace imgfs::fs {

FsContext& Ctx(fuse_req_t req) { return *static_cast<FsContext*>(fuse_req_userdata(req)); }

namespace {

constexpr unsigned kMaxIo = 1u << 20;  // FUSE requests are at most 1 MiB here
// Reads are smaller: libfuse splices a reply only when the reply, its
// header and a page per buffer fit in one pipe, and a pipe cannot grow
// past /proc/sys/fs/pipe-max-size (1 MiB by default) without
// CAP_SYS_RESOURCE. A 1 MiB reply never fits, and libfuse then copies it
// through memory twice. 768 KiB leaves room for 62 buffers per reply.
// Sequential reads of a sparse vmdk on tmpfs: 0.31 s per GiB against 0.42.
constexpr unsigned kMaxRead = 768u << 10;

void OpInit(void* userdata, fuse_conn_info* conn) {
  // Replies spliced from the image file; O_TRUNC delivered to open (where
  // it is ignored) instead of a truncating setattr.
  conn->want |= conn->capable & (FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE | FUSE_CAP_ATOMIC_O_TRUNC);
  conn->max_write = kMaxIo;
  conn->max_readahead = kMaxIo;
  // Must equal the session's -o max_read: libfuse 3.14 refuses to mount
  // when the two differ.
  conn->max_read = kMaxRead;
}

// echo: before daemonizing, warnings go to the terminal as well as to syslog
void SetLogging(const MountConfig& cfg, bool echo = false) {
  if (!cfg.log_file.empty()) {
    FILE* f = std::fopen(cfg.log_file.c_str(), "a");
    if (f) {
      std::setvbuf(f, nullptr, _IOLBF, 0);
      auto mu = std::make_shared<std::mutex>();
      SetLogSink([f, mu](LogLevel level, const std::string& msg) {
        char ts[32];
        std::time_t t = std::time(nullptr);
        std::strftime(ts, sizeof ts, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
        std::lock_guard<std::mutex> l(*mu);
        std::fprintf(f, "%s imgfs[%d] %s\n", ts, getpid(), msg.c_str());
      });
      return;
    }
    std::fprintf(stderr, "imgfs: cannot open log file %s: %s; logging to stderr\n", cfg.log_file.c_str(),
                 std::strerror(errno));
  }
  if (cfg.foreground || !cfg.log_file.empty()) {
    SetLogSink([](LogLevel level, const std::string& msg) { std::fprintf(stderr, "imgfs: %s\n", msg.c_str()); });
  } else {
    openlog("imgfs", LOG_PID, LOG_DAEMON);
    SetLogSink([echo](LogLevel level, const std::string& msg) {
      int pri = level == LogLevel::kError ? LOG_ERR : level == LogLevel::kWarning ? LOG_WARNING : LOG_INFO;
      syslog(pri, "%s", msg.c_str());
      if (echo && level != LogLevel::kInfo) std::fprintf(stderr, "imgfs: %s\n", msg.c_str());
    });
  }
}

// Forks; the parent waits for the child's word and exits, the child runs
// `ready` in its new session and returns true.
bool Daemonize(const std::function<void()>& ready) {
  int fds[2];
  if (pipe(fds) != 0) return false;
  pid_t child = fork();
  if (child < 0) return false;
  if (child > 0) {
    close(fds[1]);
    char ok = 0;
    ssize_t n;
    do n = read(fds[0], &ok, 1); while (n < 0 && errno == EINTR);
    _exit(n == 1 && ok == 1 ? 0 : 1);
  }
  close(fds[0]);
  setsid();
  if (chdir("/") != 0) {
  }
  int null = open("/dev/null", O_RDWR);
  if (null >= 0) {
    dup2(null, 0);
    dup2(null, 1);
    dup2(null, 2);
    if (null > 2) close(null);
  }
  ready();
  char ok = 1;
  if (write(fds[1], &ok, 1) != 1) {
  }
  close(fds[1]);
  return true;
}

// libfuse splits -o values at commas; a backslash keeps one literal.
std::string EscapeOption(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == ',' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}

}  // namespace

void FillOps(fuse_lowlevel_ops* ops) {
  std::memset(ops, 0, sizeof *ops);
  // Every handler that replies runs under Guard (guard.h).
  ops->init = OpInit;
  ops->lookup = Guard<OpLookup>::Call;
  ops->getattr = Guard<OpGetattr>::Call;
  ops->setattr = Guard<OpSetattr>::Call;
  ops->readdir = Guard<OpReaddir>::Call;
  ops->statfs = Guard<OpStatfs>::Call;
  ops->open = Guard<OpOpen>::Call;
  ops->read = Guard<OpRead>::Call;
  ops->write = Guard<OpWrite>::Call;
  ops->fsync = Guard<OpFsync>::Call;
  ops->release = Guard<OpRelease>::Call;
  ops->lseek = Guard<OpLseek>::Call;
  ops->fallocate = Guard<OpFallocate>::Call;
  ops->getxattr = Guard<OpGetxattr>::Call;
  ops->listxattr = Guard<OpListxattr>::Call;
  ops->setxattr = Guard<OpSetxattr>::Call;
  ops->removexattr = Guard<OpRemovexattr>::Call;
}

namespace {

// Fails (saying why) unless FUSE can mount on the mountpoint; *real is its
// canonical path.
bool CheckMountpoint(const MountConfig& cfg, std::string* real) {
  // An ordinary user may not open /dev/fuse itself: fusermount3 (setuid)
  // does it for libfuse. Only its absence is final.
  if (access("/dev/fuse", F_OK) != 0) {
    std::fprintf(stderr, "imgfs: /dev/fuse is missing (is the fuse module loaded?)\n");
    return false;
  }
  auto mp = io::StatPath(cfg.mountpoint);
  if (!mp.ok()) {
    std::fprintf(stderr, "imgfs: mountpoint %s\n", mp.status().message().c_str());
    return false;
  }
  if (!mp.value().is_dir) {
    std::fprintf(stderr, "imgfs: mountpoint %s: not a directory\n", cfg.mountpoint.c_str());
    return false;
  }
  // Canonical before mounting: afterwards resolving it would ask ourselves.
  *real = io::RealPath(cfg.mountpoint);
  MountEntry existing;
  if (FindMount(*real, &existing)) {
    std::fprintf(stderr, "imgfs: mountpoint %s is busy: a %s file system is already mounted there\n",
                 cfg.mountpoint.c_str(), existing.fstype.c_str());
    return false;
  }
  return true;
}

// -o cache_limit=SIZE (all metadata caches together) or
// cache_idle=SECONDS (an image unused that long gives its caches back).
bool TakeMemoryOption(const std::string& o, MemoryLimits* m) {
  const size_t eq = o.find('=');
  const std::string key = o.substr(0, eq), value = o.substr(eq + 1);
  if (key == "cache_limit") {
    auto size = ParseSize(value);
    if (size.ok()) m->cache_bytes = size.value();
    else std::fprintf(stderr, "imgfs: -o %s: %s\n", o.c_str(), size.status().message().c_str());
    return size.ok();
  }
  char* end = nullptr;
  errno = 0;
  const unsigned long s = std::strtoul(value.c_str(), &end, 10);
  if (value.empty() || *end || errno || value[0] == '-' || s < 1 || s > 86400 * 365) {
    std::fprintf(stderr, "imgfs: -o %s: seconds from 1 to a year\n", o.c_str());
    return false;
  }
  m->idle_seconds = uint32_t(s);
  return true;
}

// Takes imgfs's own -o options into `ctx` and *claim_at_mount; the rest
// go to FUSE (*fuse_options).
bool TakeOwnOptions(const MountConfig& cfg, FsContext& ctx, std::string* fuse_options, bool* claim_at_mount) {
  *claim_at_mount = true;
  for (size_t start = 0; start <= cfg.fuse_options.size();) {
    size_t comma = cfg.fuse_options.find(',', start);
    if (comma == std::string::npos) comma = cfg.fuse_options.size();
    const std::string o = cfg.fuse_options.substr(start, comma - start);
    start = comma + 1;
    if (o.empty()) continue;
    if (o == "allow_shrink") {
      ctx.allow_shrink = true;
    } else if (o == "claim=mount" || o == "claim=write") {
      *claim_at_mount = o == "claim=mount";
    } else if (o.rfind("claim=", 0) == 0) {
      std::fprintf(stderr, "imgfs: -o %s: claim is 'mount' or 'write'\n", o.c_str());
      return false;
    } else if (o.rfind("cache_limit=", 0) == 0 || o.rfind("cache_idle=", 0) == 0) {
      if (!TakeMemoryOption(o, &ctx.memory)) return false;
    } else if (o.rfind("keydir=", 0) == 0) {
      const std::string dir = io::RealPath(o.substr(7));
      struct stat st;
      if (o.size() == 7 || ::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
        std::fprintf(stderr, "imgfs: -o %s: not a directory\n", o.c_str());
        return false;
      }
      ctx.ns.SetKeyDir(dir);
    } else {
      *fuse_options += (fuse_options->empty() ? "" : ",") + o;
    }
  }
  return true;
}

// --key IMAGE=FILE: IMAGE names a file in SOURCE, or a path; FILE holds
// its secret. Read now, with the rights of the user who mounts.
bool LoadKeys(const MountConfig& cfg, const std::string& source) {
  for (const std::string& k : cfg.keys) {
    const size_t eq = k.find('=');
    if (eq == std::string::npos || eq == 0 || eq + 1 == k.size()) {
      std::fprintf(stderr, "imgfs: --key %s: expected IMAGE=FILE\n", k.c_str());
      return false;
    }
    std::string image = k.substr(0, eq);
    struct stat st;
    if (image[0] != '/' && ::stat((source + "/" + image).c_str(), &st) == 0) image = source + "/" + image;
    auto key = ReadKeyFile(k.substr(eq + 1));
    Status added = key.ok() ? AddImageKey(image, std::move(key).value()) : key.status();
    if (!added.ok()) {
      std::fprintf(stderr, "imgfs: --key %s: %s\n", k.c_str(), added.message().c_str());
      return false;
    }
  }
  return true;
}

// A FUSE session mounted on the mountpoint, or null (said why).
fuse_session* MountSession(const MountConfig& cfg, FsContext& ctx, const std::string& source,
                           const std::string& fuse_options) {
  std::string opts = "fsname=" + EscapeOption(source) + ",subtype=imgfs,default_permissions,max_read=" +
                     std::to_string(kMaxRead);
  if (getuid() == 0) opts += ",allow_other";
  if (cfg.read_only) opts += ",ro";
  if (!fuse_options.empty()) opts += "," + fuse_options;
  std::vector<std::string> argv_s = {"imgfs", "-o", opts};
  std::vector<char*> argv;
  for (auto& s : argv_s) argv.push_back(s.data());
  fuse_args args = FUSE_ARGS_INIT(static_cast<int>(argv.size()), argv.data());
  fuse_lowlevel_ops ops;
  FillOps(&ops);
  fuse_session* se = fuse_session_new(&args, &ops, sizeof ops, &ctx);
  if (!se) {
    std::fprintf(stderr, "imgfs: cannot create the FUSE session (bad -o options?)\n");
    return nullptr;
  }
  if (fuse_set_signal_handlers(se) != 0 || fuse_session_mount(se, cfg.mountpoint.c_str()) != 0) {
    std::fprintf(stderr, "imgfs: cannot mount on %s (busy, or no permission?)\n", cfg.mountpoint.c_str());
    fuse_remove_signal_handlers(se);
    fuse_session_destroy(se);
    return nullptr;
  }
  return se;
}

// Serves requests until unmounted or signalled, then flushes every image.
int Serve(const MountConfig& cfg, FsContext& ctx, fuse_session* se) {
  ctx.se = se;
  Watcher watcher;  // a thread: started in the daemon, after the fork
  watcher.Start(ctx);
  MemoryKeeper keeper;
  keeper.Start(ctx, ctx.memory);
  fuse_loop_config* lc = fuse_loop_cfg_create();
  fuse_loop_cfg_set_max_threads(lc, cfg.threads ? cfg.threads : 16);
  fuse_loop_cfg_set_idle_threads(lc, 4);
  int rc = fuse_session_loop_mt(se, lc);
  fuse_loop_cfg_destroy(lc);

  fuse_remove_signal_handlers(se);
  watcher.Stop();
  keeper.Stop();
  ctx.ns.JoinControls();  // a commit still running finishes before the flush
  ctx.se = nullptr;
  fuse_session_unmount(se);
  Status closed = ctx.ns.CloseAll();
  fuse_session_destroy(se);
  if (!closed.ok()) return 1;
  Log(LogLevel::kInfo, "unmounted " + cfg.mountpoint);
  // libfuse reports the signal that ended the loop; that is a clean end.
  return rc == 0 || rc == SIGINT || rc == SIGTERM || rc == SIGHUP ? 0 : 1;
}

}  // namespace

int RunMount(const MountConfig& cfg) {
  // Before the scan so that left-out images are reported where the user
  // looks: the terminal too, until we daemonize; syslog has every line.
  SetLogging(cfg, /*echo=*/!cfg.foreground && cfg.log_file.empty());
  io::RaiseFileLimit();  // before the capabilities go: root may raise the hard limit
  DropUnneededCapabilities();
  std::string mp_real;
  if (!CheckMountpoint(cfg, &mp_real)) return 1;
  FsContext ctx;
  ctx.read_only = cfg.read_only;
  std::string fuse_options;
  bool claim_at_mount;
  if (!TakeOwnOptions(cfg, ctx, &fuse_options, &claim_at_mount)) return 1;
  // Absolute, because the daemon leaves the working directory.
  const std::string source = io::RealPath(cfg.source);
  if (!LoadKeys(cfg, source)) return 1;
  Status st = ctx.ns.Scan(source, cfg.read_only, claim_at_mount);
  if (!st.ok()) {
    std::fprintf(stderr, "imgfs: %s\n", st.message().c_str());
    return 1;
  }
  fuse_session* se = MountSession(cfg, ctx, source, fuse_options);
  if (!se) return 1;
  // Four requests' worth: the kernel then keeps several 1 MiB reads in
  // flight, so decoding and the host disk overlap with the replies
  // (cold sequential reads: 1.5-2.3 GB/s against 0.8-1.7 with 1 MiB).
  RaiseReadahead(mp_real, 4 * kMaxIo);
  std::unique_ptr<PidFile> pid;
  if (!cfg.foreground) {
    // The parent returns only once the mount is in place and the pid file
    // names the daemon (so an immediate `imgfs umount` can wait for it).
    if (!Daemonize([&] { pid = std::make_unique<PidFile>(mp_real); })) {
      fuse_session_unmount(se);
      fuse_session_destroy(se);
      return 1;
    }
    if (cfg.log_file.empty()) SetLogging(cfg);
    RelockSecretMemory();  // the parent's memory locks stayed with the parent
  } else {
    pid = std::make_unique<PidFile>(mp_real);
  }
  return Serve(cfg, ctx, se);
}

}  // namespace imgfs::fs
