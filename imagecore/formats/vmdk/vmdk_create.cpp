// Creating VMDK images as qemu-img does: the same subformats, options,
// defaults, descriptor text and sparse layout, so that what qemu reads of
// its own images it reads of ours.
#include <cstdio>
#include <cstring>

#include "base/endian.h"
#include "formats/vmdk/vmdk_create.h"
#include "formats/vmdk/vmdk_image.h"
#include "formats/vmdk/vmdk_sparse.h"

namespace imgfs::vmdk {
namespace {

constexpr uint64_t kGrainSectors = 128;   // 64 KiB, as qemu
constexpr uint32_t kEntriesPerTable = 512;

struct Spec {
  std::string subformat = "monolithicSparse";
  std::string adapter = "ide";
  std::string hwversion;  // "" = 4, or 6 with compat6
  std::string tools = "2147483647";
  bool zeroed_grain = false;
  bool compat6 = false;
};

Result<Spec> ParseSpec(const CreateOptions& opts) {
  Spec s;
  for (const auto& [k, v] : opts.options) {
    if (k == "subformat") s.subformat = v;
    else if (k == "adapter_type") s.adapter = v;
    else if (k == "hwversion") s.hwversion = v;
    else if (k == "toolsversion") s.tools = v;
    else if (k == "zeroed_grain") {
      if (!ParseOnOff(v, &s.zeroed_grain)) return InvalidArgument("invalid zeroed_grain value '" + v + "'");
    } else if (k == "compat6") {
      if (!ParseOnOff(v, &s.compat6)) return InvalidArgument("invalid compat6 value '" + v + "'");
    } else {
      return InvalidArgument("vmdk does not take the option '" + k + "'");
    }
  }
  static const char* const kSub[] = {"monolithicSparse", "monolithicFlat", "twoGbMaxExtentSparse",
                                     "twoGbMaxExtentFlat", "streamOptimized"};
  bool known = false;
  for (const char* k : kSub) known |= s.subformat == k;
  if (!known) return InvalidArgument("Unknown subformat: " + s.subformat);
  if (s.adapter != "ide" && s.adapter != "buslogic" && s.adapter != "lsilogic" && s.adapter != "legacyESX")
    return InvalidArgument("Unknown adapter type: '" + s.adapter + "'");
  if (s.compat6 && !s.hwversion.empty()) return InvalidArgument("compat6 cannot be enabled with hwversion set");
  if (s.hwversion.empty()) s.hwversion = s.compat6 ? "6" : "4";
  for (char c : s.hwversion + s.tools)
    if (c == '"' || c == '\n' || c == '\r') return InvalidArgument("hwversion and toolsversion may not hold quotes or line ends");
  return s;
}

std::string DescriptorText(const Spec& s, uint32_t cid, uint32_t parent_cid, const std::string& parent,
                           const std::string& create_type, const std::string& extents, uint64_t size) {
  const uint64_t heads = s.adapter == "ide" ? 16 : 255;
  std::string t = "# Disk DescriptorFile\nversion=1\nCID=" + CidText(cid) + "\nparentCID=" + CidText(parent_cid) +
                  "\ncreateType=\"" + create_type + "\"\n";
  t += parent.empty() ? "\n" : "parentFileNameHint=\"" + parent + "\"\n";
  t += "# Extent description\n" + extents + "\n# The Disk Data Base\n#DDB\n\n";
  t += "ddb.virtualHWVersion = \"" + s.hwversion + "\"\n";
  t += "ddb.geometry.cylinders = \"" + std::to_string(size / (63 * heads * 512)) + "\"\n";
  t += "ddb.geometry.heads = \"" + std::to_string(heads) + "\"\n";
  t += "ddb.geometry.sectors = \"63\"\n";
  t += "ddb.adapterType = \"" + s.adapter + "\"\n";
  t += "ddb.toolsVersion = \"" + s.tools + "\"\n";
  return t;
}

}  // namespace

// The extent files' names as qemu makes them: "x.vmdk" -> "x-flat.vmdk".
std::string ExtentName(const std::string& main_path, const std::string& tag) {
  std::string base = main_path.substr(main_path.rfind('/') + 1);
  if (base.size() > 5 && base.compare(base.size() - 5, 5, ".vmdk") == 0) base.resize(base.size() - 5);
  return base + "-" + tag + ".vmdk";
}

// A sparse extent of `sectors` with qemu's layout: header, room for an
// embedded descriptor, the redundant directory and its tables, the
// directory and its tables, every table preallocated.
Status WriteSparse(io::File& f, uint64_t sectors, bool zeroed_grain, bool stream, const std::string& embedded) {
  const uint64_t span = kGrainSectors * kEntriesPerTable;
  const uint64_t tables = (sectors + span - 1) / span;
  const uint64_t gd_sectors = (tables * 4 + 511) / 512;
  const uint64_t table_sectors = kEntriesPerTable * 4 / 512;
  const uint64_t rgd = 1 + 20;
  const uint64_t gd = rgd + gd_sectors + tables * table_sectors;
  const uint64_t end = gd + gd_sectors + tables * table_sectors;
  const uint64_t overhead = (end + kGrainSectors - 1) / kGrainSectors * kGrainSectors;
  if (overhead > UINT32_MAX) return InvalidArgument("the disk is too large for a sparse extent");
  // The tables are zeros: the file's growth makes them. Only the header,
  // the descriptor and the directories are written.
  IMGFS_RETURN_IF_ERROR(f.Truncate(overhead * 512));
  std::vector<uint8_t> meta(21 * 512, 0);
  uint8_t* h = meta.data();
  std::memcpy(h, "KDMV", 4);
  StoreLE32(h + 4, stream ? 3 : (zeroed_grain ? 2 : 1));
  uint32_t flags = kFlagNewlineTest | kFlagRedundantGd;
  if (zeroed_grain) flags |= kFlagZeroGrain;
  if (stream) flags |= kFlagCompressed | kFlagMarkers;
  StoreLE32(h + 8, flags);
  StoreLE64(h + 12, sectors);
  StoreLE64(h + 20, kGrainSectors);
  StoreLE64(h + 28, 1);
  StoreLE64(h + 36, 20);
  StoreLE32(h + 44, kEntriesPerTable);
  StoreLE64(h + 48, rgd);
  StoreLE64(h + 56, gd);
  StoreLE64(h + 64, overhead);
  h[73] = '\n';
  h[74] = ' ';
  h[75] = '\r';
  h[76] = '\n';
  StoreLE16(h + 77, stream ? 1 : 0);
  if (embedded.size() > 20 * 512) return InvalidArgument("the descriptor does not fit in its 20 sectors");
  std::memcpy(meta.data() + 512, embedded.data(), embedded.size());
  IMGFS_RETURN_IF_ERROR(f.PWrite(0, meta.data(), meta.size()));
  std::vector<uint8_t> dir(gd_sectors * 512, 0);
  for (uint64_t t = 0; t < tables; ++t) StoreLE32(&dir[t * 4], uint32_t(rgd + gd_sectors + t * table_sectors));
  IMGFS_RETURN_IF_ERROR(f.PWrite(rgd * 512, dir.data(), dir.size()));
  for (uint64_t t = 0; t < tables; ++t) StoreLE32(&dir[t * 4], uint32_t(gd + gd_sectors + t * table_sectors));
  return f.PWrite(gd * 512, dir.data(), dir.size());
}

Status CreateFiles(NewFiles& files, const CreateOptions& opts) {
  if (opts.size % 512) {  // whole sectors, rounded up as qemu-img does
    CreateOptions rounded = opts;
    rounded.size = opts.size / 512 * 512 + 512;
    return CreateFiles(files, rounded);
  }
  IMGFS_ASSIGN_OR_RETURN(Spec s, ParseSpec(opts));
  const bool flat = s.subformat == "monolithicFlat" || s.subformat == "twoGbMaxExtentFlat";
  const bool split = s.subformat.rfind("twoGb", 0) == 0;
  const bool stream = s.subformat == "streamOptimized";
  if (opts.size == 0) return InvalidArgument("the size must be more than 0");
  if (opts.size / 512 > kMaxCapacitySectors) return InvalidArgument("the size is too large for a VMDK image");
  if (s.zeroed_grain && flat) return InvalidArgument("zeroed_grain applies to sparse subformats only");
  uint32_t parent_cid = kNoParent;
  if (!opts.backing_file.empty()) {
    if (flat) return InvalidArgument("Flat image can't have backing file");
    if (opts.backing_format != "vmdk")
      return InvalidArgument("Invalid backing file format: " + opts.backing_format + ". Only vmdk is supported.");
    const auto* parent = dynamic_cast<const VmdkImage*>(opts.backing_image);
    if (!parent) return InvalidArgument("the backing file is not a VMDK image");
    parent_cid = parent->cid();
  }
  if (opts.backing_file.find_first_of("\"\n\r") != std::string::npos)
    return InvalidArgument("the backing file name may not hold quotes or line ends");
  const uint64_t sectors = opts.size / 512;
  const uint32_t cid = NewCid();
  const std::string main_name = files.main_path().substr(files.main_path().rfind('/') + 1);
  if (main_name.find_first_of("\"\n\r") != std::string::npos)
    return InvalidArgument("the file name may not hold quotes or line ends");

  if (s.subformat == "monolithicSparse" || stream) {
    const std::string text = DescriptorText(s, cid, parent_cid, opts.backing_file, s.subformat,
                                            "RW " + std::to_string(sectors) + " SPARSE \"" + main_name + "\"\n", opts.size);
    IMGFS_ASSIGN_OR_RETURN(io::File * f, files.Main());
    return WriteSparse(*f, sectors, s.zeroed_grain, stream, text);
  }
  // A descriptor file and its extents.
  std::string lines;
  const uint64_t per = split ? kSplitBytes / 512 : sectors;
  for (uint64_t at = 0, n = 1; at < sectors; at += per, ++n) {
    const uint64_t here = std::min(per, sectors - at);
    char tag[16];
    std::snprintf(tag, sizeof tag, split ? (flat ? "f%03llu" : "s%03llu") : "flat", (unsigned long long)n);
    const std::string name = ExtentName(files.main_path(), tag);
    IMGFS_ASSIGN_OR_RETURN(io::File * f, files.Add(name));
    if (flat) {
      IMGFS_RETURN_IF_ERROR(f->Truncate(here * 512));  // a hole that reads as zeros
      lines += "RW " + std::to_string(here) + " FLAT \"" + name + "\" 0\n";
    } else {
      IMGFS_RETURN_IF_ERROR(WriteSparse(*f, here, s.zeroed_grain, false, ""));
      lines += "RW " + std::to_string(here) + " SPARSE \"" + name + "\"\n";
    }
  }
  const std::string text = DescriptorText(s, cid, parent_cid, opts.backing_file, s.subformat, lines, opts.size);
  IMGFS_ASSIGN_OR_RETURN(io::File * f, files.Main());
  return f->PWrite(0, text.data(), text.size());
}

}  // namespace imgfs::vmdk
