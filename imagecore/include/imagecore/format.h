// The table of format drivers and probing by content.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "imagecore/file.h"
#include "imagecore/image.h"
#include "imagecore/named_files.h"
#include "imagecore/secret.h"
#include "imagecore/status.h"

namespace imgfs {

struct OpenOptions {
  OpenOptions() = default;
  explicit OpenOptions(bool w) : writable(w) {}
  bool writable = false;
  // Set by `check`: report an image left dirty as it is instead of
  // repairing it at open (as qemu-img check opens images).
  bool no_repair = false;
  // Set by `check` without a repair: the image is opened to be checked
  // and nothing else. As qemu-img check opens it, tables past the end of
  // the file read as zeros and damaged snapshot entries are kept, for the
  // check to report instead of the open failing. Read-only opens only.
  bool check_only = false;
  // Whether a writable open takes QEMU's write claim on the files. An
  // open without it (for a file another program may still be making)
  // writes nothing at open, repairs included: Image::ClaimWriting does
  // that once the claim is taken.
  bool claim = true;
  // The rights the image file is opened with, and those for every file it
  // names (see imagecore/access.h).
  io::Access file_access;
  io::Access access;
  // Where files come from (null: the host's).
  const FileOpener* opener = nullptr;

  const FileOpener& files() const { return opener ? *opener : HostFiles(); }
  // Opens a file that the file at `naming_path` names (an extent, a data
  // file), resolved as backing names are, with the rights `access`; a
  // writable open takes QEMU's write claim on it. Errors name the path.
  Result<std::unique_ptr<io::File>> OpenNamed(const std::string& naming_path, const std::string& name,
                                              bool writable) const;
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
  // The backing file, opened (null: none), for what a child records of
  // its parent (VMDK: the parent's CID).
  const Image* backing_image = nullptr;
  std::map<std::string, std::string> options;
  // Where key-secret options find their secrets (null: none given).
  const SecretStore* secrets = nullptr;
};

// Parses the value as qemu-img takes it; `what` names the image for errors.
Result<Prealloc> ParsePrealloc(const std::string& value, const std::string& what);
// A boolean -o value as qemu-img takes it (on/off, true/false, yes/no);
// false if it is none of these.
bool ParseOnOff(const std::string& value, bool* out);
// Reserves [off, off+n) of `file` as `mode` asks (falloc: host space; full:
// zeros written; off and metadata: nothing).
Status PreallocateRange(io::File& file, uint64_t off, uint64_t n, Prealloc mode);

// What a format can do. The views, attributes, `ctl` and the CLI follow
// these rather than a format's name.
struct Capabilities {
  bool backing = false;            // a layer may name a backing file
  bool internal_snapshots = false;
  bool bitmaps = false;
  bool change_backing = false;     // rebase
  bool resize = false;
  bool compressed_writes = false;
  bool several_files = false;      // an image may be more than one file
  bool create_reads_parent = false;  // a new child records its parent (VMDK: the CID): opened even with create -u
  // qemu's driver answers block status at most one cluster (grain) at a
  // time: what `compare -s` sees of where a run ends.
  bool status_by_grain = false;
  // The file is the disk's bytes as they are, nothing else: a block
  // device can be written as one in place.
  bool plain_disk = false;
  // A new image does not read as zeros (luks: its empty payload decrypts to
  // noise), so a copy into it writes zeros too.
  bool new_not_zero = false;
};

// What `measure` knows of the disk to be converted.
struct MeasureInput {
  uint64_t size = 0;         // virtual size: the source's, or --size
  bool has_source = false;
  // The source's runs that hold data (start, length), in order.
  std::vector<std::pair<uint64_t, uint64_t>> data;
  // The source's persistent bitmaps, where its format keeps them.
  bool source_keeps_bitmaps = false;
  std::vector<ImageInfo::Bitmap> bitmaps;
};
// qemu-img measure's answer.
struct MeasureResult {
  uint64_t required = 0, fully_allocated = 0;
  bool has_bitmaps = false;
  uint64_t bitmaps = 0;
};

// One format. Drivers fill it with named fields; a format that is
// recognised but not served has a probe and nothing else.
struct FormatDriver {
  const char* name = nullptr;
  // How well the file's content matches (0: not this format). `head` holds
  // its first bytes (up to 512; fewer in a shorter file); a probe reads
  // what else it needs through `file` (a signature may lie at the end).
  int (*probe)(const io::File& file, const uint8_t* head, size_t len) = nullptr;
  // Null: recognised, not served yet (opening it says so).
  Result<std::unique_ptr<Image>> (*open)(std::unique_ptr<io::File> file, const OpenOptions& opts) = nullptr;
  // Writes a new image into an empty file.
  Status (*create)(io::File& file, const CreateOptions& opts) = nullptr;
  // Writes a new image of several files (instead of `create`): the main
  // one and the others it names, all through `files`.
  Status (*create_files)(NewFiles& files, const CreateOptions& opts) = nullptr;
  // The other files the image in `file` consists of (extents, a data
  // file), as stored; read from the header only, so that a directory
  // listing can tell them from images without opening every chain. Null:
  // the image is one file.
  Result<std::vector<NamedFile>> (*members)(const io::File& file) = nullptr;
  // The size a new image of this format needs for `in` (-o options in
  // `opts.options`), as qemu-img measure computes it. Null: not measured.
  Result<MeasureResult> (*measure)(const CreateOptions& opts, const MeasureInput& in) = nullptr;
  // The -o options that create and amend take, one "  key=<type> - what"
  // line each (create: after the common ones; amend: null if the format
  // cannot amend).
  const char* create_options = nullptr;
  const char* amend_options = nullptr;
  Capabilities caps = {};
};

// Every driver, in probing order.
std::vector<const FormatDriver*> Formats();
// The driver with this name, or null.
const FormatDriver* FindFormat(const std::string& name);
// What the format named `name` can do, for an image that does not exist
// yet (an output's -O): nothing, for an unknown name. An open image
// answers for itself (Image::caps).
const Capabilities& CapabilitiesOf(const std::string& name);
// The best match by content, or null if no driver claims the file. Raw never
// claims a file by content: callers decide when raw is meant.
const FormatDriver* ProbeFormat(const io::File& file);
// The driver for a file that no driver claims, when it is served as a
// disk anyway (raw).
const FormatDriver& PlainFormat();

// Opens one layer: `format` names the driver, or "" probes, falling back to
// raw. Errors name the file.
Result<std::unique_ptr<Image>> OpenImage(const std::string& path, const std::string& format,
                                         const OpenOptions& opts);

}  // namespace imgfs
