// What the image targets do with an image that opened: the calls a reader
// (info, map, cat, check) and a writer make, each bounded so that no input
// can keep one run busy for long, whatever its virtual size.
#pragma once

#include <memory>

#include "imagecore/file.h"
#include "imagecore/format.h"
#include "imagecore/image.h"

namespace imgfs::fuzz {

// Opens `file` as qcow2 (null if the driver refuses it).
std::unique_ptr<Image> OpenQcow2(std::unique_ptr<io::File> file, bool writable);

// Info, snapshots, block status over the disk (the first extents only),
// reads of what it finds, and a check without repair.
void WalkForReading(Image& img);

// A full repair, a few small writes (aligned, unaligned, at the end of the
// disk), zeroing, a flush; closing it later stores its dirty bitmaps.
void WalkForWriting(Image& img);

// The exclusive changes of the qemu-img subcommands on what the image
// holds: bitmap steps on its first bitmap (and a new one merged from it),
// a grow with preallocation, amend of refcount_bits and compat both ways.
void WalkForChanging(Image& img);

}  // namespace imgfs::fuzz
