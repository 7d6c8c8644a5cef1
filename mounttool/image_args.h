// The options qemu-img takes for naming and opening an image, shared by
// the subcommands: -f, -U, -t/-T, --image-opts and --object.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "imagecore/secret.h"
#include "imagecore/status.h"

namespace imgfs::cli {

struct ImageArgs {
  std::string format;
  bool force_share = false;  // -U: imgfs reads without QEMU's locks anyway; accepted
  bool image_opts = false;
  std::string cache;         // -t/-T: accepted, imgfs has one I/O path
  std::vector<std::string> objects;
};

// Registers -f (when `format`), -U, -t (and -T when `source_cache`),
// --image-opts and --object on `app`.
void AddImageArgs(CLI::App& app, ImageArgs* a, bool format = true, bool source_cache = false);

// The path and format an operand names: as it is, or with --image-opts an
// option string ("driver=qcow2,file.filename=x.qcow2"). Loads the --object
// secrets; a key-secret option gives the image its key (keyring.h).
// Refuses options imgfs has no equivalent for, naming them.
struct ImageSpec {
  std::string path, format;
};
Result<ImageSpec> ResolveImage(const ImageArgs& a, const std::string& operand);
// The same for an option string alone (--target-image-opts).
Result<ImageSpec> ResolveImageOpts(const std::string& text);

// The secrets of the --object options given (each loaded once).
Status LoadObjects(const std::vector<std::string>& objects);
const SecretStore& Secrets();

}  // namespace imgfs::cli
