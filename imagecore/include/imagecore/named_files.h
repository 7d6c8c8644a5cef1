// The files an image names: backing files, external data files, extents.
//
// One resolver turns every stored name into a path, and one opener opens
// it, so that names mean the same to every driver and to the chain, a
// writable open always takes QEMU's locks, and unit tests can hand a driver
// in-memory files instead of the host's.
#pragma once

#include <memory>
#include <string>

#include "imagecore/access.h"
#include "imagecore/file.h"
#include "imagecore/status.h"

namespace imgfs {

// What a file is to the image that opened it.
enum class FileRole { kImage, kDescriptor, kExtent, kDataFile };
const char* FileRoleName(FileRole role);

// Where a name stored in the file at `naming_path` points: absolute names
// and protocol names ("nbd://", "json:") as they are, others against the
// directory of `naming_path`.
std::string ResolveNamedPath(const std::string& naming_path, const std::string& name);

// Opens and creates files by path. The host's is the default; tests pass
// their own. Thread-safe.
class FileOpener {
 public:
  virtual ~FileOpener() = default;
  virtual Result<std::unique_ptr<io::File>> Open(const std::string& path, bool writable,
                                                 const io::Access& as) const = 0;
  // A new file (it must not exist), for writing.
  virtual Result<std::unique_ptr<io::File>> Create(const std::string& path) const = 0;
  virtual bool Exists(const std::string& path) const = 0;
  virtual Status Rename(const std::string& from, const std::string& to) const = 0;
  virtual void Remove(const std::string& path) const = 0;
};
const FileOpener& HostFiles();

}  // namespace imgfs
