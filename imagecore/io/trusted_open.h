// Opening a path whose symlinks must belong to someone trusted.
#pragma once

#include <sys/types.h>

#include <string>

namespace imgfs::io {

// Opens `path` with `flags` (O_NOFOLLOW is implied for every step) as
// open(2) would, but follows a symlink on the way only if root or `owner`
// owns it. Returns the descriptor, or -1 with errno set; for a symlink of
// someone else, -1 with errno EACCES and *refused naming the link.
int OpenThroughTrustedLinks(const std::string& path, int flags, uid_t owner, std::string* refused);

}  // namespace imgfs::io
