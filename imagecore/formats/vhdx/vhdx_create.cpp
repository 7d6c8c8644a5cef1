#include "formats/vhdx/vhdx_create.h"

#include <cstring>
#include <memory>

#include "base/endian.h"
#include "formats/vhdx/vhdx_format.h"
#include "formats/vhdx/vhdx_image.h"
#include "formats/vhdx/vhdx_metadata.h"
#include "imagecore/size.h"

namespace imgfs::vhdx {
namespace {

uint64_t RoundUp(uint64_t v, uint64_t to) { return (v + to - 1) / to * to; }

struct Spec {
  bool fixed = false;
  uint64_t block_size = 0;  // 0: by the disk's size
  uint64_t log_size = kMiB;
  bool block_state_zero = true;
};

Result<Spec> ParseSpec(const CreateOptions& opts) {
  Spec s;
  for (const auto& [k, v] : opts.options) {
    if (k == "subformat") {
      if (v != "dynamic" && v != "fixed") return InvalidArgument("Parameter 'subformat' does not accept value '" + v + "'");
      s.fixed = v == "fixed";
    } else if (k == "block_size") {
      IMGFS_ASSIGN_OR_RETURN(s.block_size, ParseSize(v));
    } else if (k == "log_size") {
      IMGFS_ASSIGN_OR_RETURN(s.log_size, ParseSize(v));
    } else if (k == "block_state_zero") {
      if (!ParseOnOff(v, &s.block_state_zero)) return InvalidArgument("Parameter 'block_state_zero' expects 'on' or 'off'");
    } else {
      return InvalidArgument("vhdx does not take the option '" + k + "'");
    }
  }
  // As qemu-img: whole MiB, at most 256 MiB, a power of two.
  if (s.block_size) {
    s.block_size = std::min<uint64_t>(RoundUp(s.block_size, kMiB), kMaxBlockSize);
    if (s.block_size & (s.block_size - 1)) return InvalidArgument("Block size must be a power of two");
  }
  s.log_size = std::max<uint64_t>(kMiB, RoundUp(s.log_size, kMiB));
  if (s.log_size > 256 * kMiB) return InvalidArgument("Log size must be at most 256 MiB");
  return s;
}

// Where everything of a new image lies.
struct Layout {
  uint64_t log_offset, log_length, bat_offset, bat_length, meta_offset, payload;
};

Layout Place(const DiskParams& p, const Spec& s) {
  Layout l;
  l.log_offset = kMiB;
  l.log_length = s.log_size;
  l.bat_offset = l.log_offset + l.log_length;
  // Room for the payload and sector bitmap entries of every chunk, which
  // every reading of the specification's counts fits in.
  const BatGeometry g(p);
  const uint64_t chunks = (g.payload_blocks + g.chunk_ratio - 1) / g.chunk_ratio;
  l.bat_length = RoundUp(chunks * (g.chunk_ratio + 1) * 8, kMiB);
  l.meta_offset = l.bat_offset + l.bat_length;
  l.payload = l.meta_offset + kMiB;
  return l;
}

std::vector<uint8_t> MetadataRegion(const DiskParams& p) {
  std::vector<uint8_t> m(kMiB, 0);
  std::vector<MetadataEntry> entries;
  uint32_t at = kMetadataTableBytes;
  auto add = [&](const Guid& id, const uint8_t* data, uint32_t len, bool virtual_disk) {
    std::memcpy(&m[at], data, len);
    entries.push_back({id, at, len, false, virtual_disk, true});
    at += (len + 7) / 8 * 8;
  };
  uint8_t b[16] = {};
  StoreLE32(b, p.block_size);
  StoreLE32(b + 4, (p.leave_blocks_allocated ? 1 : 0) | (p.has_parent ? 2 : 0));
  add(kFileParametersItem, b, 8, false);
  StoreLE64(b, p.disk_size);
  add(kVirtualDiskSizeItem, b, 8, true);
  p.page83.Store(b);
  add(kPage83Item, b, 16, true);
  StoreLE32(b, p.logical_sector);
  add(kLogicalSectorItem, b, 4, true);
  StoreLE32(b, p.physical_sector);
  add(kPhysicalSectorItem, b, 4, true);
  if (p.parent) {
    const std::vector<uint8_t> loc = StoreParentLocator(*p.parent);
    add(kParentLocatorItem, loc.data(), uint32_t(loc.size()), false);
  }
  StoreMetadataTable(entries, m.data());
  return m;
}

// The parent's identity and where to find it, for a differencing disk.
Result<ParentLocator> LocatorFor(const CreateOptions& opts) {
  if (!opts.backing_format.empty() && opts.backing_format != "vhdx")
    return InvalidArgument("the parent of a VHDX differencing disk must be a VHDX image, not " + opts.backing_format);
  if (!opts.backing_image || &opts.backing_image->driver() != &kDriver)
    return InvalidArgument("the parent of a VHDX differencing disk must be a VHDX image");
  const auto* parent = static_cast<const VhdxImage*>(opts.backing_image);
  ParentLocator loc;
  loc.type = kVhdxParentLocatorType;
  loc.entries.emplace_back("parent_linkage", "{" + parent->data_write_guid().ToText() + "}");
  loc.entries.emplace_back("relative_path", RelativeParentPath(opts.backing_file));
  return loc;
}

Status WriteAll(io::File& f, const DiskParams& p, const Layout& l, const Spec& s) {
  std::vector<uint8_t> buf(kRegionTableBytes, 0);
  const std::vector<uint8_t> creator = Utf8ToUtf16("imgfs");
  std::memcpy(buf.data(), "vhdxfile", 8);
  std::memcpy(buf.data() + 8, creator.data(), creator.size());
  IMGFS_RETURN_IF_ERROR(f.PWrite(0, buf.data(), kHeaderBytes));
  // The regions, both copies alike.
  StoreRegionTable({{kBatRegion, l.bat_offset, uint32_t(l.bat_length), true},
                    {kMetadataRegion, l.meta_offset, kMiB, true}},
                   buf.data());
  for (uint64_t at : kRegionTableOffsets) IMGFS_RETURN_IF_ERROR(f.PWrite(at, buf.data(), buf.size()));
  const std::vector<uint8_t> meta = MetadataRegion(p);
  IMGFS_RETURN_IF_ERROR(f.PWrite(l.meta_offset, meta.data(), meta.size()));
  // The BAT: a fixed disk's blocks one after another; else each block's
  // state as qemu-img sets it (ZERO with block_state_zero, which hides
  // nothing: a differencing disk's blocks read the parent).
  const BatGeometry g(p);
  const uint8_t state = p.has_parent || !s.block_state_zero ? kNotPresent : kZero;
  std::vector<uint8_t> bat(g.entries * 8, 0);
  for (uint64_t b = 0; b < g.payload_blocks; ++b)
    StoreLE64(&bat[g.PayloadEntry(b) * 8], s.fixed ? MakeEntry(kFullyPresent, l.payload + b * p.block_size) : state);
  IMGFS_RETURN_IF_ERROR(f.PWrite(l.bat_offset, bat.data(), bat.size()));
  const uint64_t end = s.fixed ? l.payload + g.payload_blocks * p.block_size : l.payload;
  IMGFS_RETURN_IF_ERROR(f.Truncate(end));
  // The headers last: before them the file is no VHDX image. Header 2 is
  // current, as qemu-img leaves a new image.
  Header h;
  h.sequence = 1;
  h.file_write = Guid::Random();
  h.data_write = Guid::Random();
  h.log_length = uint32_t(l.log_length);
  h.log_offset = l.log_offset;
  for (uint64_t at : kHeaderOffsets) {
    StoreHeader(h, buf.data());
    IMGFS_RETURN_IF_ERROR(f.PWrite(at, buf.data(), kHeaderBytes));
    ++h.sequence;
  }
  return f.Sync();
}

}  // namespace

uint32_t DefaultBlockSize(uint64_t size) {
  if (size <= (uint64_t(1) << 30)) return 8 * kMiB;
  if (size <= (uint64_t(100) << 30)) return 16 * kMiB;
  if (size <= (uint64_t(32) << 40)) return 32 * kMiB;
  return 64 * kMiB;
}

std::string RelativeParentPath(const std::string& backing) {
  std::string p = backing;
  for (char& c : p)
    if (c == '/') c = '\\';
  if (p.rfind(".\\", 0) != 0 && p.rfind("..\\", 0) != 0 && p.rfind("\\", 0) != 0) p = ".\\" + p;
  return p;
}

Status CreateImage(io::File& file, const CreateOptions& opts) {
  IMGFS_ASSIGN_OR_RETURN(Spec s, ParseSpec(opts));
  DiskParams p;
  p.disk_size = RoundUp(opts.size, 512);
  if (!p.disk_size || p.disk_size > kMaxDiskSize) return InvalidArgument("Image size must be between 512 bytes and 64 TiB");
  p.block_size = uint32_t(s.block_size ? s.block_size : DefaultBlockSize(p.disk_size));
  p.logical_sector = 512;
  p.physical_sector = 512;
  p.page83 = Guid::Random();
  if (!opts.backing_file.empty()) {
    if (s.fixed) return InvalidArgument("a differencing VHDX is dynamic (subformat=fixed takes no backing file)");
    IMGFS_ASSIGN_OR_RETURN(ParentLocator loc, LocatorFor(opts));
    const auto* parent = static_cast<const VhdxImage*>(opts.backing_image);
    if (p.disk_size != parent->VirtualSize())
      return InvalidArgument("a differencing VHDX has its parent's size (" + std::to_string(parent->VirtualSize()) +
                             " bytes)");
    p.logical_sector = parent->params().logical_sector;
    p.physical_sector = parent->params().physical_sector;
    p.page83 = parent->params().page83;  // the disk's identity is the parent's
    if (!s.block_size) p.block_size = parent->params().block_size;  // block for block
    p.has_parent = true;
    p.parent = std::move(loc);
  }
  p.leave_blocks_allocated = s.fixed;
  return WriteAll(file, p, Place(p, s), s);
}

}  // namespace imgfs::vhdx
