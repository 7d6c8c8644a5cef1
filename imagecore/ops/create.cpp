#include <cstdio>
#include <sstream>

#include "imagecore/chain.h"
#include "imagecore/ops.h"
#include "imagecore/size.h"

namespace imgfs::ops {

Result<std::map<std::string, std::string>> ParseOptionList(const std::string& text) {
  std::map<std::string, std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (item.empty()) continue;
    auto eq = item.find('=');
    if (eq == std::string::npos || eq == 0) return InvalidArgument("invalid option '" + item + "' (expected key=value)");
    out[item.substr(0, eq)] = item.substr(eq + 1);
  }
  return out;
}

Status StageCreate(const CreateRequest& req, NewFiles* files) {
  const FormatDriver* drv = FindFormat(req.format);
  if (!drv || (!drv->create && !drv->create_files))
    return Unsupported("unknown or unsupported format '" + req.format + "'");
  CreateOptions opts;
  opts.secrets = req.secrets;
  IMGFS_ASSIGN_OR_RETURN(opts.options, ParseOptionList(req.options));
  // qemu-img spells these as -o options too.
  if (auto it = opts.options.find("backing_file"); it != opts.options.end()) {
    if (req.backing_file.empty()) opts.backing_file = it->second;
    opts.options.erase(it);
  }
  if (auto it = opts.options.find("backing_fmt"); it != opts.options.end()) {
    if (req.backing_format.empty()) opts.backing_format = it->second;
    opts.options.erase(it);
  }
  std::string size = req.size;
  if (auto it = opts.options.find("size"); it != opts.options.end()) {
    if (size.empty()) size = it->second;
    opts.options.erase(it);
  }
  if (!req.backing_file.empty()) opts.backing_file = req.backing_file;
  if (!req.backing_format.empty()) opts.backing_format = req.backing_format;

  std::unique_ptr<Chain> backing;
  // -u: named, not opened (unless the format records its parent).
  const bool open_backing = !req.unsafe || drv->caps.create_reads_parent;
  if (!opts.backing_file.empty() && !open_backing) {
    if (opts.backing_format.empty()) return InvalidArgument("Backing file specified without backing format");
    if (size.empty()) return InvalidArgument("Image creation needs a size parameter");
  }
  if (!opts.backing_file.empty() && open_backing) {
    // Open the backing file (as qemu-img does) to check it and learn its size.
    auto chain = Chain::Open(ResolveBacking(req.path, BackingRef{.name = opts.backing_file}), opts.backing_format, false);
    if (!chain.ok()) return chain.status().Prefixed("could not open backing file");
    backing = std::move(chain).value();
    if (opts.backing_format.empty()) opts.backing_format = backing->layer(0).format_name();
    if (size.empty()) opts.size = backing->VirtualSize();
    opts.backing_image = &backing->layer(0);
    // A new image written over its own backing file would destroy it.
    if (auto out = InspectOutput(req.path); out.ok() && !CheckNotAnInput(out.value(), {backing.get()}).ok())
      return InvalidArgument("Trying to create an image with the same file as the backing file (or one of its chain)");
  }
  if (!size.empty()) {
    IMGFS_ASSIGN_OR_RETURN(opts.size, ParseSize(size));
  } else if (opts.backing_file.empty()) {
    return InvalidArgument("image size must be given (or a backing file)");
  }
  if (drv->create_files) return drv->create_files(*files, opts);
  IMGFS_ASSIGN_OR_RETURN(io::File * main, files->Main());
  return drv->create(*main, opts);
}

std::string CreateHelp(const std::string& format) {
  const FormatDriver* drv = FindFormat(format);
  if (!drv || (!drv->create && !drv->create_files)) return "";
  return std::string("Supported options:\n") +
         (!drv->caps.backing ? "" :
                               "  backing_file=<str>     - the backing file (also -b)\n"
                               "  backing_fmt=<str>      - its format (also -F)\n") +
         "  size=<size>            - the virtual size (also the SIZE operand)\n" +
         (drv->create_options ? drv->create_options : "");
}

namespace {
// qemu-img create onto a block device checks that the disk fits; a plain
// disk has nothing more to write.
Status CreateOnDevice(const CreateRequest& req) {
  if (!CapabilitiesOf(req.format).plain_disk)
    return InvalidArgument("a block device takes a raw image only (-f raw)");
  if (!req.backing_file.empty()) return InvalidArgument("a raw image cannot name a backing file");
  IMGFS_ASSIGN_OR_RETURN(uint64_t size, ParseSize(req.size.empty() ? "0" : req.size));
  IMGFS_ASSIGN_OR_RETURN(auto dev, io::OpenPosixFile(req.path, false));
  if (dev->Size() < size)
    return InvalidArgument("the device is smaller than the image (" + std::to_string(dev->Size()) +
                           " < " + std::to_string(size) + " bytes)");
  return Status::OK();
}
}  // namespace

Status Create(const CreateRequest& req) {
  IMGFS_ASSIGN_OR_RETURN(Output out, InspectOutput(req.path));
  if (out.kind == Output::kBlockDevice) return CreateOnDevice(req);
  // Every file under a temporary name, synced and renamed into place at
  // the end: a crash or a failure leaves either no image or a whole one.
  CreateRequest at = req;
  at.path = out.path;
  NewFiles files(HostFiles(), at.path);
  IMGFS_RETURN_IF_ERROR(StageCreate(at, &files));
  return files.Commit();
}

}  // namespace imgfs::ops
