// The watcher: follows SOURCE live with inotify, so images added, removed
// or renamed there appear and disappear in the mount.
#pragma once

#include <thread>

namespace imgfs::fs {

struct FsContext;

class Watcher {
 public:
  ~Watcher() { Stop(); }
  // Starts watching ctx.ns.source() if it is a directory. Logs and carries
  // on without it if inotify is not available.
  void Start(FsContext& ctx);
  void Stop();

 private:
  void Run(FsContext& ctx);
  int inotify_ = -1;
  int stop_[2] = {-1, -1};  // a pipe: writing to it ends Run
  std::thread thread_;
};

}  // namespace imgfs::fs
