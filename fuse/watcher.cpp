#include "watcher.h"

#include <poll.h>
#include <sys/inotify.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

#include "imagecore/log.h"
#include "guard.h"
#include "notify.h"
#include "ops.h"

namespace imgfs::fs {

void Watcher::Start(FsContext& ctx) {
  if (!ctx.ns.watches()) return;
  inotify_ = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
  if (inotify_ < 0 || pipe2(stop_, O_CLOEXEC) != 0) {
    Log(LogLevel::kWarning, std::string("not following changes in SOURCE: inotify: ") + std::strerror(errno));
    return;
  }
  // A finished write (qemu-img create, cp) or a rename into SOURCE (imgfs
  // create) adds; a delete or a rename out removes. Writes in place do
  // not count: the mount itself writes images all the time.
  const uint32_t mask = IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE | IN_ONLYDIR;
  if (inotify_add_watch(inotify_, ctx.ns.source().c_str(), mask) < 0) {
    Log(LogLevel::kWarning, "not following changes in " + ctx.ns.source() + ": " + std::strerror(errno));
    return;
  }
  thread_ = std::thread([this, &ctx] { RunGuarded("following " + ctx.ns.source(), [&] { Run(ctx); }); });
}

void Watcher::Stop() {
  if (thread_.joinable()) {
    char c = 0;
    if (write(stop_[1], &c, 1) < 0) {
    }
    thread_.join();
  }
  for (int fd : {inotify_, stop_[0], stop_[1]})
    if (fd >= 0) close(fd);
  inotify_ = stop_[0] = stop_[1] = -1;
}

void Watcher::Run(FsContext& ctx) {
  std::vector<char> buf(64 * 1024);
  for (;;) {
    pollfd fds[2] = {{inotify_, POLLIN, 0}, {stop_[0], POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents) return;
    const ssize_t n = read(inotify_, buf.data(), buf.size());
    if (n <= 0) continue;
    for (char* p = buf.data(); p < buf.data() + n;) {
      const auto* ev = reinterpret_cast<const inotify_event*>(p);
      p += sizeof(inotify_event) + ev->len;
      if (ev->mask & IN_Q_OVERFLOW) Log(LogLevel::kWarning, "inotify queue overflow: some changes in SOURCE were missed");
      if (!ev->len || (ev->mask & IN_ISDIR)) continue;
      const std::string name(ev->name);
      if (ev->mask & (IN_DELETE | IN_MOVED_FROM)) {
        const long i = ctx.ns.Removed(name);
        if (i >= 0 && ctx.se)
          fuse_lowlevel_notify_delete(ctx.se, kRootIno, InoOf(NodeKind::kImageDir, size_t(i)), name.c_str(), name.size());
      } else if (ev->mask & (IN_CLOSE_WRITE | IN_MOVED_TO)) {
        const long had = ctx.ns.Find(name);
        const long i = ctx.ns.Added(name, ev->mask & IN_MOVED_TO);
        if (i >= 0 && i == had) {  // the same image, changed: its views may be cached
          InvalidateInode(ctx, InoOf(NodeKind::kDisk, size_t(i)));
          for (size_t d = 0; d < kMaxLayers; ++d) InvalidateInode(ctx, InoOf(NodeKind::kLayer, size_t(i), d));
          InvalidateInode(ctx, InoOf(NodeKind::kLayersDir, size_t(i)));
          InvalidateInode(ctx, InoOf(NodeKind::kSnapshotsDir, size_t(i)));
          continue;
        }
        if (i >= 0 || had >= 0) InvalidateEntry(ctx, kRootIno, name);  // a cached "no such file", or the old entry
        if (i >= 0) InvalidateInode(ctx, kRootIno);
      }
    }
  }
}

}  // namespace imgfs::fs
