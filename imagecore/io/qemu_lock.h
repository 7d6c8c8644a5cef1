// QEMU's image locking, so that imgfs and QEMU (qemu-system, qemu-img,
// qemu-storage-daemon) see each other's claims on an image file.
#pragma once

#include <string>

#include "imagecore/status.h"

namespace imgfs::io {

// Claims the open file `fd` (at `path`) for writing the way QEMU does: it
// holds read, write and resize, and shares neither write nor resize. Busy,
// naming the process where /proc tells, if someone else holds or forbids
// any of that. The claim lasts until the descriptor is closed.
Status ClaimForWriting(int fd, const std::string& path);
// Whether ClaimForWriting would succeed now (Busy naming the holder if not).
Status CheckClaim(int fd, const std::string& path);
// Gives the claim up; the descriptor stays open.
void DropClaim(int fd);

}  // namespace imgfs::io
