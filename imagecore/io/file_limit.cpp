#include <sys/resource.h>

#include <cstdio>

#include "imagecore/file.h"

namespace imgfs::io {

void RaiseFileLimit() {
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
  unsigned long nr_open = 0;
  if (FILE* f = std::fopen("/proc/sys/fs/nr_open", "r")) {
    if (std::fscanf(f, "%lu", &nr_open) != 1) nr_open = 0;
    std::fclose(f);
  }
  if (nr_open > rl.rlim_max) {
    struct rlimit up = {nr_open, nr_open};
    if (setrlimit(RLIMIT_NOFILE, &up) == 0) return;  // needs CAP_SYS_RESOURCE
  }
  if (rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

}  // namespace imgfs::io
