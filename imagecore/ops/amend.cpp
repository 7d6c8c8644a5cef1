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
  if (format == "qcow2")
    return "Amend options for 'qcow2':\n"
           "  compat=<str>           - compatibility level (v2 [0.10] or v3 [1.1]); a downgrade expands zero\n"
           "                           clusters and removes bitmaps\n"
           "  data_file=<str>        - the name of the external data file (of an image that has one)\n"
           "  data_file_raw=<bool>   - shown for completeness: it cannot change on an existing image\n"
           "  lazy_refcounts=<bool>  - postpone refcount updates (on, off; needs compat=1.1)\n"
           "  refcount_bits=<num>    - width of a refcount entry (1 to 64, a power of two; not 16 needs compat=1.1)\n";
  if (format == "vmdk")
    return "Amend options for 'vmdk':\n"
           "  adapter_type=<str>     - ide, lsilogic, buslogic or legacyESX (the geometry follows)\n"
           "  hwversion=<str>        - the virtual hardware version\n"
           "  toolsversion=<str>     - the VMware tools version\n";
  return "Format driver '" + format + "' does not support option amendment\n";
}

}  // namespace imgfs::ops
