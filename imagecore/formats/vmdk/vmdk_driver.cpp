// vmdk: probing, the files an image consists of, and what it can do.
#include "formats/vmdk/vmdk_create.h"
#include "formats/vmdk/vmdk_descriptor.h"
#include "formats/vmdk/vmdk_image.h"
#include "formats/vmdk/vmdk_sparse.h"

namespace imgfs::vmdk {
namespace {

int Probe(const uint8_t* head, size_t len) {
  if (IsKdmv(head, len) || IsCowd(head, len) || IsSeSparse(head, len)) return 100;
  return LooksLikeDescriptor(head, len) ? 100 : 0;
}

Result<std::vector<std::string>> Members(const io::File& file) {
  uint8_t head[512];
  IMGFS_RETURN_IF_ERROR(file.PRead(0, head, sizeof head));
  if (IsKdmv(head, sizeof head) || !LooksLikeDescriptor(head, sizeof head)) return std::vector<std::string>{};
  if (file.Size() > kMaxDescriptorBytes) return Corrupt("descriptor file larger than 1 MiB");
  std::string text(file.Size(), '\0');
  IMGFS_RETURN_IF_ERROR(file.PRead(0, text.data(), text.size()));
  IMGFS_ASSIGN_OR_RETURN(Descriptor d, ParseDescriptor(text));
  std::vector<std::string> out;
  for (const ExtentLine& e : d.extents)
    if (e.has_file) out.push_back(e.file);
  return out;
}

Capabilities VmdkCaps() {
  Capabilities c;
  c.several_files = true;
  c.discard = true;         // flat extents punch holes; sparse grains are punched or zeroed
  c.make_empty = true;
  c.resize = true;
  c.change_backing = true;  // parentFileNameHint and parentCID
  c.create_reads_parent = true;
  c.status_by_grain = true;
  c.compressed_writes = true;  // streamOptimized output; -c onto other subformats writes plain, as qemu-img
  return c;
}

}  // namespace

const FormatDriver kDriver = {"vmdk", Probe, VmdkImage::Open, nullptr, VmdkCaps(), Members, CreateFiles};

}  // namespace imgfs::vmdk
