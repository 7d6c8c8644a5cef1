// vmdk: probing, the files an image consists of, and what it can do.
#include "formats/vmdk/vmdk_create.h"
#include "formats/vmdk/vmdk_descriptor.h"
#include "formats/vmdk/vmdk_image.h"
#include "formats/vmdk/vmdk_sparse.h"

namespace imgfs::vmdk {
namespace {

int Probe(const io::File&, const uint8_t* head, size_t len) {
  if (IsKdmv(head, len) || IsCowd(head, len) || IsSeSparse(head, len)) return 100;
  return LooksLikeDescriptor(head, len) ? 100 : 0;
}

Result<std::vector<NamedFile>> Members(const io::File& file) {
  uint8_t head[512];
  IMGFS_RETURN_IF_ERROR(file.PRead(0, head, sizeof head));
  if (IsKdmv(head, sizeof head) || !LooksLikeDescriptor(head, sizeof head)) return std::vector<NamedFile>{};
  if (file.Size() > kMaxDescriptorBytes) return Corrupt("descriptor file larger than 1 MiB");
  std::string text(file.Size(), '\0');
  IMGFS_RETURN_IF_ERROR(file.PRead(0, text.data(), text.size()));
  IMGFS_ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor(text));
  std::vector<NamedFile> out;
  for (const ExtentLine& e : d.extents)
    if (e.has_file) out.push_back({e.file, FileRole::kExtent});
  return out;
}

constexpr const char* kCreateOptions =
    "  subformat=<str>        - monolithicSparse (default), monolithicFlat, twoGbMaxExtentSparse,\n"
    "                           twoGbMaxExtentFlat, streamOptimized\n"
    "  adapter_type=<str>     - ide (default), lsilogic, buslogic, legacyESX\n"
    "  hwversion=<str>        - the virtual hardware version (default 4)\n"
    "  compat6=<bool>         - hardware version 6\n"
    "  toolsversion=<str>     - the VMware tools version\n"
    "  zeroed_grain=<bool>    - zeroed-grain table entries (sparse subformats)\n";
constexpr const char* kAmendOptions =
    "  adapter_type=<str>     - ide, lsilogic, buslogic or legacyESX (the geometry follows)\n"
    "  hwversion=<str>        - the virtual hardware version\n"
    "  toolsversion=<str>     - the VMware tools version\n";

}  // namespace

const FormatDriver kDriver = {
    .name = "vmdk",
    .probe = Probe,
    .open = VmdkImage::Open,
    .create_files = CreateFiles,
    .members = Members,
    .create_options = kCreateOptions,
    .amend_options = kAmendOptions,
    .caps = {.backing = true,
             .change_backing = true,  // parentFileNameHint and parentCID
             .resize = true,
             // streamOptimized output; -c onto other subformats writes plain, as qemu-img
             .compressed_writes = true,
             .several_files = true,
             .create_reads_parent = true,
             .status_by_grain = true},
};

const FormatDriver& VmdkImage::driver() const { return kDriver; }

}  // namespace imgfs::vmdk
