// Permissions in a shared mount. Every node under an image's directory
// shows the image file's owner and group, and permission bits that never
// grant more than any file the node reads from: a class of users (owner,
// group, others) that cannot read one of the chain's files loses both read
// and write on the view (a write would copy that file's bytes up into the
// image). The kernel checks these bits (default_permissions); opens then
// check the caller against each file exactly (MayReadAll).
#pragma once

#include <sys/types.h>

#include <vector>

#include "imagecore/chain.h"
#include "imagecore/file.h"

namespace imgfs::fs {

// The permission bits (07777 masked to 0666) of a view over `top` and the
// files below it, `lower` (as Chain::StatFiles lists them, top excluded).
mode_t ViewPerm(const io::FileStat& top, const std::vector<io::FileStat>& lower);
// A directory's bits for a view with bits `perm`: r-x where it reads, and
// w for the owner where it writes (the control attributes of the directory).
mode_t DirPerm(mode_t perm);
// The files a view of `chain` from `depth` down reads, other than the image
// file itself (whose bits the view starts from): the `lower` of ViewPerm.
std::vector<io::FileStat> FilesBelowImage(const Chain& chain, size_t depth);
// Whether the user (uid, gid, groups) may read every file in `files`.
bool MayReadAll(const std::vector<io::FileStat>& files, uid_t uid, gid_t gid, const std::vector<gid_t>& groups);

}  // namespace imgfs::fs
