// Creating a new qcow2 image: header, refcount table and blocks, empty L1.
#include <algorithm>
#include <cstring>
#include <vector>

#include "base/endian.h"
#include "formats/qcow2/qcow2_create_crypt.h"
#include "formats/qcow2/qcow2_driver.h"
#include "formats/qcow2/qcow2_format.h"
#include "imagecore/size.h"

namespace imgfs::qcow2 {

Status ParseCreateOptions(const CreateOptions& opts, Header* hp, uint64_t* cluster_size_out, Prealloc* prealloc) {
  Header& h = *hp;
  uint64_t cluster_size = 65536;
  bool lazy = false, extended = false, raw = false;
  Prealloc mode = Prealloc::kOff;
  for (const auto& [k, v] : opts.options) {
    if (k == "cluster_size") {
      IMGFS_ASSIGN_OR_RETURN(cluster_size, ParseSize(v));
      if (cluster_size < 512 || cluster_size > (2u << 20) || (cluster_size & (cluster_size - 1)))
        return InvalidArgument("cluster size must be a power of two between 512 and 2M");
    } else if (k == "compat") {
      if (v == "0.10" || v == "v2") h.version = 2;
      else if (v == "1.1" || v == "v3") h.version = 3;
      else return InvalidArgument("invalid compat level '" + v + "'");
    } else if (k == "lazy_refcounts") {
      if (!ParseOnOff(v, &lazy)) return InvalidArgument("invalid lazy_refcounts value '" + v + "'");
    } else if (k == "refcount_bits") {
      uint32_t order = 0;
      while (order <= 6 && (1u << order) != std::strtoul(v.c_str(), nullptr, 10)) ++order;
      if (order > 6) return InvalidArgument("refcount_bits must be a power of two up to 64");
      h.refcount_order = order;
    } else if (k == "preallocation") {
      IMGFS_ASSIGN_OR_RETURN(mode, ParsePrealloc(v, "qcow2"));
    } else if (k == "extended_l2") {
      if (!ParseOnOff(v, &extended)) return InvalidArgument("Parameter 'extended_l2' expects 'on' or 'off'");
    } else if (k == "data_file") {
      h.data_file = v;
    } else if (k == "data_file_raw") {
      if (!ParseOnOff(v, &raw)) return InvalidArgument("Parameter 'data_file_raw' expects 'on' or 'off'");
    } else if (k == "compression_type") {
      if (v == "zlib") h.compression_type = 0;
      else if (v == "zstd") h.compression_type = 1;
      else return InvalidArgument("Parameter 'compression-type' does not accept value '" + v + "'");
    } else {
      return Unsupported("qcow2 option '" + k + "=" + v + "' is not supported yet");
    }
  }
  if (h.version == 2 && (lazy || h.refcount_order != 4))
    return InvalidArgument("lazy_refcounts and refcount_bits other than 16 need compat=1.1");
  if (h.version == 2 && h.compression_type != 0)
    return InvalidArgument("Non-zlib compression type is only supported with compatibility level 1.1 and above (use version=v3 or greater)");
  if (extended && h.version == 2)
    return InvalidArgument("Extended L2 entries are only supported with compatibility level 1.1 and above (use version=v3 or greater)");
  if (extended && cluster_size < 16384)
    return InvalidArgument("Extended L2 entries are only supported with cluster sizes of at least 16384 bytes");
  if (!h.data_file.empty() && h.version == 2)
    return InvalidArgument("External data files are only supported with compatibility level 1.1 and above (use version=v3 or greater)");
  if (raw && h.data_file.empty()) return InvalidArgument("data-file-raw requires data-file");
  if (raw && !opts.backing_file.empty()) return InvalidArgument("Backing file and data-file-raw cannot be used at the same time");
  if (h.data_file.size() > 1023) return InvalidArgument("data file name is too long");
  if (mode != Prealloc::kOff && !opts.backing_file.empty() && !extended)
    return InvalidArgument("Backing file and preallocation can only be used at the same time if extended_l2 is on");
  // A raw data file is the disk itself: the tables map all of it from the start.
  if (raw && mode == Prealloc::kOff) mode = Prealloc::kMetadata;
  if (extended) h.incompatible_features |= kIncompatExtendedL2;
  if (!h.data_file.empty()) h.incompatible_features |= kIncompatDataFile;
  if (raw) h.autoclear_features |= kAutoclearDataFileRaw;
  if (prealloc) *prealloc = mode;
  if (lazy) h.compatible_features |= kCompatLazyRefcounts;
  // A compression type other than zlib is an incompatible feature.
  if (h.compression_type != 0) h.incompatible_features |= kIncompatCompression;
  h.cluster_bits = 0;
  while ((1ull << h.cluster_bits) < cluster_size) ++h.cluster_bits;
  h.size = (opts.size + 511) / 512 * 512;  // whole sectors, rounded up as qemu-img does
  *cluster_size_out = cluster_size;
  return Status::OK();
}

namespace {
// Layout: header | refcount table | refcount blocks | L1 table, then with
// preallocation each L2 table followed by the data clusters it maps (as
// qemu lays them out). Tables and blocks are written one cluster at a time.
// With an external data file the data lives there, at its guest offset,
// and the qcow2 file holds only the tables.
// An encrypted image's LUKS header follows the L1 table, in clusters of its
// own (`crypto_ext`: where the header extension that names them lies in c0).
Status WriteLayout(io::File& file, io::File* data_file, Header& h, uint64_t cs, Prealloc prealloc,
                   std::vector<uint8_t>& c0, const NewEncryption& enc, uint64_t crypto_ext) {
  const bool extended = h.incompatible_features & kIncompatExtendedL2;
  const uint64_t entry_bytes = extended ? 16 : 8;
  h.l1_size = uint32_t(L1EntriesFor(h.size, h.cluster_bits, extended));
  if (uint64_t(h.l1_size) * 8 > kMaxL1Bytes) return InvalidArgument("image size is too large for this cluster size");
  const uint64_t l1_clusters = (uint64_t(h.l1_size) * 8 + cs - 1) / cs;
  const uint64_t l2_entries = cs / entry_bytes;
  const uint64_t mapped = prealloc == Prealloc::kOff ? 0 : (h.size + cs - 1) / cs;
  const uint64_t tables = (mapped + l2_entries - 1) / l2_entries;
  const uint64_t data = data_file ? 0 : mapped;  // clusters of the qcow2 file that hold data
  const uint64_t crypto_clusters = (enc.AreaBytes() + cs - 1) / cs;
  const uint64_t per_block = cs * 8 / h.refcount_bits();
  // The smallest table and block counts that cover all these clusters.
  uint64_t rt = 1, rb = 1;
  for (;;) {
    const uint64_t total = 1 + rt + rb + l1_clusters + crypto_clusters + tables + data;
    const uint64_t need_rb = (total + per_block - 1) / per_block;
    const uint64_t need_rt = (need_rb * 8 + cs - 1) / cs;
    if (need_rb <= rb && need_rt <= rt) break;
    rb = std::max(rb, need_rb);
    rt = std::max(rt, need_rt);
  }
  h.refcount_table_offset = cs;
  h.refcount_table_clusters = uint32_t(rt);
  const uint64_t l1_at = 1 + rt + rb;  // in clusters
  h.l1_table_offset = l1_at * cs;      // (qemu points an empty one there too)
  const uint64_t crypto_at = l1_at + l1_clusters;
  const uint64_t total = crypto_at + crypto_clusters + tables + data;

  // Data first, header last: an interrupted create leaves no valid image.
  // Without preallocation the file ends with the L1 table, as qemu's does.
  const uint64_t end = tables || crypto_clusters ? total * cs : l1_at * cs + uint64_t(h.l1_size) * 8;
  IMGFS_RETURN_IF_ERROR(file.Truncate(end));
  if (data_file) IMGFS_RETURN_IF_ERROR(data_file->Truncate(h.size));
  std::vector<uint8_t> table(rt * cs, 0);
  for (uint64_t i = 0; i < rb; ++i) StoreBE64(&table[i * 8], (1 + rt + i) * cs);
  IMGFS_RETURN_IF_ERROR(file.PWrite(cs, table.data(), table.size()));
  // Refcount 1 for every cluster below `total`, at the configured width.
  const uint32_t bits = h.refcount_bits();
  std::vector<uint8_t> block(cs);
  for (uint64_t b = 0; b < rb; ++b) {
    std::fill(block.begin(), block.end(), 0);
    for (uint64_t i = 0; i < per_block && b * per_block + i < total; ++i) {
      const uint64_t bit = i * bits;
      if (bits >= 8) block[bit / 8 + bits / 8 - 1] = 1;  // big-endian: the last byte holds the 1
      else block[bit / 8] |= uint8_t(1u << (bit % 8));
    }
    IMGFS_RETURN_IF_ERROR(file.PWrite((1 + rt + b) * cs, block.data(), cs));
  }
  // L1, L2 tables and the data they map. As qemu: with metadata each table
  // precedes its data; with falloc and full the tables come first and the
  // data is one contiguous run. Extended entries leave every subcluster
  // unallocated (the backing file, or zeros, shows through).
  std::vector<uint8_t> l1(l1_clusters * cs, 0), l2(cs);
  const bool interleave = prealloc == Prealloc::kMetadata && !data_file;
  if (crypto_clusters) {
    IMGFS_RETURN_IF_ERROR(enc.WriteArea(file, crypto_at * cs));
    StoreBE64(&c0[crypto_ext + 8], crypto_at * cs);
    StoreBE64(&c0[crypto_ext + 16], enc.AreaBytes());
  }
  const uint64_t first = crypto_at + crypto_clusters;
  for (uint64_t t = 0; t < tables; ++t) {
    const uint64_t n = std::min(l2_entries, mapped - t * l2_entries);
    const uint64_t l2_at = interleave ? first + t * (l2_entries + 1) : first + t;
    const uint64_t data_at = data_file ? t * l2_entries : interleave ? l2_at + 1 : first + tables + t * l2_entries;
    StoreBE64(&l1[t * 8], (l2_at * cs) | kOflagCopied);
    std::fill(l2.begin(), l2.end(), 0);
    for (uint64_t j = 0; j < n; ++j) StoreBE64(&l2[j * entry_bytes], ((data_at + j) * cs) | kOflagCopied);
    IMGFS_RETURN_IF_ERROR(file.PWrite(l2_at * cs, l2.data(), cs));
    const uint64_t len = std::min(n * cs, h.size - std::min(h.size, data_at * cs));
    if (data_file) IMGFS_RETURN_IF_ERROR(PreallocateRange(*data_file, data_at * cs, len, prealloc));
    else IMGFS_RETURN_IF_ERROR(PreallocateRange(file, data_at * cs, n * cs, prealloc));
  }
  if (tables) IMGFS_RETURN_IF_ERROR(file.PWrite(l1_at * cs, l1.data(), uint64_t(h.l1_size) * 8));
  std::vector<uint8_t> fixed = h.EncodeFixed();
  std::memcpy(c0.data(), fixed.data(), fixed.size());
  if (data_file) IMGFS_RETURN_IF_ERROR(data_file->Sync());
  IMGFS_RETURN_IF_ERROR(file.Sync());
  IMGFS_RETURN_IF_ERROR(file.PWrite(0, c0.data(), cs));
  return file.Sync();
}

Status CreateInto(io::File& file, io::File* data_file, const CreateOptions& given) {
  CreateOptions opts = given;
  IMGFS_ASSIGN_OR_RETURN(NewEncryption enc, TakeEncryptionOptions(opts, file.path()));
  Header h;
  uint64_t cs;
  Prealloc prealloc = Prealloc::kOff;
  IMGFS_RETURN_IF_ERROR(ParseCreateOptions(opts, &h, &cs, &prealloc));
  h.crypt_method = enc.method;
  if (enc.method && prealloc != Prealloc::kOff)
    return Unsupported(file.path() + ": preallocation of an encrypted image is not supported yet");
  if (enc.method && h.incompatible_features & kIncompatExtendedL2)
    return Unsupported(file.path() + ": encryption with extended L2 entries is not supported yet");
  if (!h.data_file.empty() && !data_file) return Unsupported("an external data file needs a create of several files");
  h.header_length = h.version >= 3 ? 112 : kV2HeaderSize;

  // Header cluster: fixed header, extensions, backing file name.
  std::vector<uint8_t> c0(cs, 0);
  std::vector<uint8_t> fixed_probe = h.EncodeFixed();
  uint64_t pos = fixed_probe.size();
  auto put_ext = [&](uint32_t type, const std::string& data) -> Status {
    uint64_t need = 8 + ((data.size() + 7) & ~size_t(7));
    if (pos + need + 8 > cs) return InvalidArgument("header extensions do not fit in one cluster");
    StoreBE32(&c0[pos], type);
    StoreBE32(&c0[pos + 4], uint32_t(data.size()));
    std::memcpy(&c0[pos + 8], data.data(), data.size());
    pos += need;
    return Status::OK();
  };
  if (!opts.backing_format.empty()) IMGFS_RETURN_IF_ERROR(put_ext(kExtBackingFormat, opts.backing_format));
  if (!h.data_file.empty()) IMGFS_RETURN_IF_ERROR(put_ext(kExtDataFile, h.data_file));
  const uint64_t crypto_ext = pos;  // filled in once the LUKS clusters have their place
  if (enc.luks) IMGFS_RETURN_IF_ERROR(put_ext(kExtCrypto, std::string(16, '\0')));
  pos += 8;  // end-of-extensions marker (zeros)
  if (!opts.backing_file.empty()) {
    if (opts.backing_file.size() > 1023) return InvalidArgument("backing file name is too long");
    if (pos + opts.backing_file.size() > cs) return InvalidArgument("backing file name does not fit in the header cluster");
    h.backing_file_offset = pos;
    h.backing_file_size = uint32_t(opts.backing_file.size());
    std::memcpy(&c0[pos], opts.backing_file.data(), opts.backing_file.size());
  }

  IMGFS_RETURN_IF_ERROR(WriteLayout(file, data_file, h, cs, prealloc, c0, enc, crypto_ext));
  return enc.RememberKey(file);
}
}  // namespace

Status CreateImage(io::File& file, const CreateOptions& opts) { return CreateInto(file, nullptr, opts); }

Status CreateFiles(NewFiles& files, const CreateOptions& opts) {
  IMGFS_ASSIGN_OR_RETURN(io::File * main, files.Main());
  auto it = opts.options.find("data_file");
  io::File* data = nullptr;
  if (it != opts.options.end() && !it->second.empty()) {
    IMGFS_ASSIGN_OR_RETURN(data, files.Add(it->second));
  }
  return CreateInto(*main, data, opts);
}

}  // namespace imgfs::qcow2
