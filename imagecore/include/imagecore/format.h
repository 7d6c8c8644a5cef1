// The table of format drivers and probing by content.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>

#include "imagecore/file.h"
#include "imagecore/image.h"
#include "imagecore/status.h"

namespace imgfs {

struct OpenOptions {
  OpenOptions() = default;
  explicit OpenOptions(bool w) : writable(w) {}
  bool writable = false;
  // Set by `check`: report an image left dirty as it is instead of
  // repairing it at open (as qemu-img check opens images).
  bool no_repair = false;
  // The rights the image file is opened with, and those for every file it
  // names (see imagecore/access.h).
  io::Access file_access;
  io::Access access;
};

// The options to open one layer with the rights `a`: a chain's top image
// file with `self`, a file another layer named with `named`; what the
// layer names in turn, always with `named`.
inline OpenOptions LayerOptions(const io::ImageAccess& a, bool top, bool writable = false) {
  OpenOptions o(writable);
  o.file_access = top ? a.self : a.named;
  o.access = a.named;
  return o;
}

// Options for creating an image. `options` holds the -o key=value pairs;
// each driver takes out the keys it knows and refuses the rest.
struct CreateOptions {
  uint64_t size = 0;
  std::string backing_file;    // as it will be stored
  std::string backing_format;
  std::map<std::string, std::string> options;
};

struct FormatDriver {
  const char* name;
  // Scores how well the first bytes of a file match (0 = not this format).
  int (*probe)(const uint8_t* head, size_t len);
  Result<std::unique_ptr<Image>> (*open)(std::unique_ptr<io::File> file, const OpenOptions& opts);
  // Writes a new image into an empty file.
  Status (*create)(io::File& file, const CreateOptions& opts);
};

// The driver with this name, or null.
const FormatDriver* FindFormat(const std::string& name);
// The best match by content, or null if no driver claims the file. Raw never
// claims a file by content: callers decide when raw is meant.
const FormatDriver* ProbeFormat(const io::File& file);
// A short name for a file whose magic is known but not served ("vmdk"...).
std::string SniffForeignFormat(const io::File& file);

// Opens one layer: `format` names the driver, or "" probes, falling back to
// raw. Errors name the file.
Result<std::unique_ptr<Image>> OpenImage(const std::string& path, const std::string& format,
                                         const OpenOptions& opts);

}  // namespace imgfs
