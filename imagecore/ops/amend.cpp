// qemu-img amend: the image alone is opened (its backing file is not
// needed) and its driver changes the options.
#include "imagecore/format.h"
#include "imagecore/ops.h"

namespace imgfs::ops {

Status Amend(const std::string& path, const std::string& format, const std::string& options,
             const ProgressFn& progress) {
  IMGFS_ASSIGN_OR_RETURN(auto opts, ParseOptionList(options));
  if (opts.empty()) return InvalidArgument("Must specify options (-o)");
  auto image = OpenImage(path, format, OpenOptions(true));
  if (!image.ok()) return image.status().Prefixed("Could not open '" + path + "'");
  IMGFS_RETURN_IF_ERROR(image.value()->Amend(opts, progress));
  return image.value()->Flush();
}

Result<std::string> AmendHelp(const std::string& path, const std::string& format) {
  std::string fmt = format;
  if (fmt.empty() && !path.empty()) {
    auto probed = OpenImage(path, "", OpenOptions(false));
    if (probed.ok()) fmt = probed.value()->format_name();
  }
  if (fmt.empty()) return InvalidArgument("Expecting one image file name (or -f FMT) for -o help");
  return AmendHelp(fmt);
}

std::string AmendHelp(const std::string& format) {
  const FormatDriver* drv = FindFormat(format);
  if (!drv || !drv->amend_options) return "Format driver '" + format + "' does not support option amendment\n";
  return "Amend options for '" + format + "':\n" + drv->amend_options;
}

}  // namespace imgfs::ops
