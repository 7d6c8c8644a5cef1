#include "capabilities.h"

#include <linux/capability.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstring>
#include <string>

#include "imagecore/log.h"

namespace imgfs::fs {

namespace {
constexpr int kKept[] = {CAP_CHOWN,  CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER,    CAP_FSETID,
                         CAP_SETGID, CAP_SETUID,       CAP_SYS_ADMIN,       CAP_SYS_PTRACE};

bool Kept(int cap) {
  for (int k : kKept)
    if (k == cap) return true;
  return false;
}
}  // namespace

void DropUnneededCapabilities() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[2]{};
  if (syscall(SYS_capget, &header, data) != 0) return;
  if (!data[0].permitted && !data[1].permitted) return;  // an ordinary user: nothing to give up
  // Out of the bounding set first (that needs CAP_SETPCAP, given up next),
  // so that no program the daemon runs gets them back.
  for (int cap = 0; cap <= CAP_LAST_CAP; ++cap)
    if (!Kept(cap)) prctl(PR_CAPBSET_DROP, cap, 0, 0, 0);
  uint32_t keep[2] = {0, 0};
  for (int k : kKept) keep[k / 32] |= 1u << (k % 32);
  for (int i = 0; i < 2; ++i) {
    data[i].effective &= keep[i];
    data[i].permitted &= keep[i];
    data[i].inheritable &= keep[i];
  }
  if (syscall(SYS_capset, &header, data) != 0)
    Log(LogLevel::kWarning, std::string("cannot give up capabilities: ") + std::strerror(errno));
}

}  // namespace imgfs::fs
