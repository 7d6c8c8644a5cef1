// Access: whose rights a file is opened with.
//
// A root mount serves images that other users put into SOURCE, and an image
// names other files (its backing file, its data file). Opened with root's
// rights, an image could name /etc/shadow and show it to its owner. So
// every file an image names is opened with the rights of the image file's
// owner: what that owner could not open, the image cannot use either.
//
// Thread safety: the switch of rights is per thread (Linux keeps fsuid,
// fsgid and the groups per task), held only around the open(2) itself.
#pragma once

#include <sys/types.h>

#include <string>
#include <vector>

#include "imagecore/status.h"

namespace imgfs::io {

struct Access {
  bool as_user = false;  // false: the process's own rights
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups of `uid`
  // The file these rights were judged on, for an image file in SOURCE
  // opened with the daemon's rights: an open that finds another file at
  // the path (a link, or a file swapped in since) fails instead of
  // serving it, so a user who owns SOURCE cannot slip root's files in.
  bool pinned = false;
  dev_t dev = 0;
  ino_t ino = 0;
  // For the files an image in a shared mount names: a symlink on the way
  // is followed only if root or `link_owner` (the image's owner) owns it,
  // so that no third user chooses what an image reads.
  bool trusted_links_only = false;
  uid_t link_owner = 0;
  std::string who() const;    // "uid 1000" for messages
};

// The rights an image is opened with: its own file's (`self`: the daemon's,
// which serves SOURCE; for a symlink in SOURCE, the link owner's, who chose
// the target) and those of every file it names (`named`: the image file's
// owner's).
struct ImageAccess {
  Access self;
  Access named;
};

// The rights of the user `uid` (primary group `gid`, its supplementary
// groups from the user database). The process's own rights where they are
// already those, or where the process cannot take others' (not root).
Access AccessOf(uid_t uid, gid_t gid);
// The rights for the image at `path` in SOURCE (see ImageAccess); `self`
// is pinned to the regular file found there.
ImageAccess AccessForImage(const std::string& path);

// Runs with `a`'s file-system rights on this thread until destroyed.
class ScopedAccess {
 public:
  explicit ScopedAccess(const Access& a);
  ~ScopedAccess();
  ScopedAccess(const ScopedAccess&) = delete;
  ScopedAccess& operator=(const ScopedAccess&) = delete;
  // Whether the switch took effect (or none was asked for).
  bool ok() const { return ok_; }

 private:
  bool switched_ = false;
  bool ok_ = true;
  uid_t old_uid_ = 0;
  gid_t old_gid_ = 0;
  std::vector<gid_t> old_groups_;
};

// Whether a user (uid, gid, groups) may read or write a file with this
// owner and mode, as the kernel's permission check decides it.
bool MayAccess(uid_t file_uid, gid_t file_gid, mode_t file_mode, uid_t uid, gid_t gid,
               const std::vector<gid_t>& groups, bool write);

}  // namespace imgfs::io
