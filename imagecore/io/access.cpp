// Per-thread file-system rights (setfsuid/setfsgid/setgroups as raw
// system calls: glibc's setgroups would change every thread of the daemon).
#include "imagecore/access.h"

#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <mutex>
#include <unordered_map>
#include "imagecore/mutex.h"

namespace imgfs::io {

namespace {

constexpr int kMaxGroups = 4096;

std::vector<gid_t> GroupsOf(uid_t uid, gid_t gid) {
  std::vector<char> buf(16384);
  struct passwd pw, *res = nullptr;
  if (getpwuid_r(uid, &pw, buf.data(), buf.size(), &res) != 0 || !res) return {gid};
  int n = 64;
  std::vector<gid_t> groups(n);
  while (getgrouplist(pw.pw_name, gid, groups.data(), &n) < 0 && n <= kMaxGroups) groups.resize(size_t(n));
  groups.resize(size_t(std::clamp(n, 0, int(groups.size()))));
  return groups;
}

std::vector<gid_t> ThreadGroups() {
  std::vector<gid_t> g(kMaxGroups);
  long n = syscall(SYS_getgroups, kMaxGroups, g.data());
  g.resize(n > 0 ? size_t(n) : 0);
  return g;
}

}  // namespace

std::string Access::who() const { return as_user ? "uid " + std::to_string(uid) : "the daemon"; }

Access AccessOf(uid_t uid, gid_t gid) {
  Access a;
  if (geteuid() != 0 || uid == geteuid()) return a;
  // The user database is asked once per owner: mounts list thousands of
  // images of a few owners.
  static Mutex mu;
  static std::unordered_map<uint64_t, std::vector<gid_t>> cache GUARDED_BY(mu);
  const uint64_t key = uint64_t(uid) << 32 | gid;
  {
    MutexLock l(mu);
    auto it = cache.find(key);
    if (it == cache.end()) it = cache.emplace(key, GroupsOf(uid, gid)).first;
    a.groups = it->second;
  }
  a.as_user = true;
  a.uid = uid;
  a.gid = gid;
  return a;
}

ImageAccess AccessForImage(const std::string& path) {
  ImageAccess a;
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return a;
  a.named = AccessOf(st.st_uid, st.st_gid);
  a.named.trusted_links_only = true;
  a.named.link_owner = st.st_uid;
  if (S_ISLNK(st.st_mode)) {
    a.self = a.named;  // the link owner's rights judge what it names
  } else {
    a.self.pinned = true;
    a.self.dev = st.st_dev;
    a.self.ino = st.st_ino;
  }
  return a;
}

ScopedAccess::ScopedAccess(const Access& a) {
  if (!a.as_user) return;
  old_uid_ = uid_t(syscall(SYS_setfsuid, -1));
  old_gid_ = gid_t(syscall(SYS_setfsgid, -1));
  old_groups_ = ThreadGroups();
  switched_ = true;
  // Groups and group first: changing fsuid away from 0 drops the
  // capabilities that override permission checks (they come back with it).
  ok_ = syscall(SYS_setgroups, a.groups.size(), a.groups.data()) == 0;
  syscall(SYS_setfsgid, a.gid);
  syscall(SYS_setfsuid, a.uid);
  ok_ = ok_ && uid_t(syscall(SYS_setfsuid, -1)) == a.uid && gid_t(syscall(SYS_setfsgid, -1)) == a.gid;
}

ScopedAccess::~ScopedAccess() {
  if (!switched_) return;
  syscall(SYS_setfsuid, old_uid_);
  syscall(SYS_setfsgid, old_gid_);
  syscall(SYS_setgroups, old_groups_.size(), old_groups_.data());
}

bool MayAccess(uid_t file_uid, gid_t file_gid, mode_t file_mode, uid_t uid, gid_t gid,
               const std::vector<gid_t>& groups, bool write) {
  if (uid == 0) return true;
  const mode_t want = write ? 2 : 4;
  if (uid == file_uid) return (file_mode >> 6) & want;
  if (gid == file_gid || std::find(groups.begin(), groups.end(), file_gid) != groups.end())
    return (file_mode >> 3) & want;
  return file_mode & want;
}

}  // namespace imgfs::io
