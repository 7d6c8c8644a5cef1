#include "permissions.h"

#include "imagecore/access.h"

namespace imgfs::fs {

mode_t ViewPerm(const io::FileStat& top, const std::vector<io::FileStat>& lower) {
  mode_t perm = top.mode & 0666;
  for (const io::FileStat& f : lower) {
    // The owner's rights opened every file of the chain, so the owner could
    // read it then; a file of the same owner says so itself.
    const bool owner = f.uid != top.uid || (f.mode & 0400);
    // Members of the image's group: certain only where the file grants
    // them (its own group being the same) or grants everyone.
    const bool group = (f.mode & 0004) || (f.gid == top.gid && (f.mode & 0040));
    const bool others = f.mode & 0004;
    if (!owner) perm &= ~mode_t(0600);
    if (!group) perm &= ~mode_t(0060);
    if (!others) perm &= ~mode_t(0006);
  }
  return perm;
}

mode_t DirPerm(mode_t perm) {
  mode_t d = 0;
  if (perm & 0400) d |= 0500 | (perm & 0200);
  if (perm & 0040) d |= 0050;
  if (perm & 0004) d |= 0005;
  return d;
}

std::vector<io::FileStat> FilesBelowImage(const Chain& chain, size_t depth) {
  auto files = chain.StatFiles(depth);
  if (depth == 0 && !files.empty()) files.erase(files.begin());
  return files;
}

bool MayReadAll(const std::vector<io::FileStat>& files, uid_t uid, gid_t gid, const std::vector<gid_t>& groups) {
  for (const io::FileStat& f : files)
    if (!io::MayAccess(f.uid, f.gid, f.mode, uid, gid, groups, false)) return false;
  return true;
}

}  // namespace imgfs::fs
