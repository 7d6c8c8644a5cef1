#include "mountinfo.h"

#include <cstdio>
#include <cstring>

namespace imgfs::fs {

bool FindMount(const std::string& real, MountEntry* out) {
  FILE* f = std::fopen("/proc/self/mountinfo", "r");
  if (!f) return false;
  char line[4096];
  bool found = false;
  while (std::fgets(line, sizeof line, f)) {
    char id[32], parent[32], majmin[64], root[1024], mp[2048];
    if (std::sscanf(line, "%31s %31s %63s %1023s %2047s", id, parent, majmin, root, mp) != 5) continue;
    std::string mpath;  // undo mountinfo's octal escapes (\040 for a space)
    for (const char* p = mp; *p; ++p) {
      if (p[0] == '\\' && p[1] && p[2] && p[3]) {
        mpath += static_cast<char>((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
        p += 3;
      } else {
        mpath += *p;
      }
    }
    if (mpath != real) continue;
    const char* sep = std::strstr(line, " - ");
    char fstype[256] = "";
    if (sep) std::sscanf(sep + 3, "%255s", fstype);
    *out = MountEntry{majmin, fstype};
    found = true;
  }
  std::fclose(f);
  return found;
}

void RaiseReadahead(const std::string& mountpoint, unsigned bytes) {
  MountEntry m;
  if (!FindMount(mountpoint, &m) || m.fstype != "fuse.imgfs") return;
  FILE* ra = std::fopen(("/sys/class/bdi/" + m.dev + "/read_ahead_kb").c_str(), "w");
  if (!ra) return;
  std::fprintf(ra, "%u\n", bytes / 1024);
  std::fclose(ra);
}

}  // namespace imgfs::fs
