// Decoding and encoding the qcow2 header and its extensions.
#include <algorithm>
#include <cstdio>
#include <cstring>

#include "base/endian.h"
#include "formats/qcow2/qcow2_format.h"

namespace imgfs::qcow2 {

std::vector<RawExtension> ReadExtensions(const std::vector<uint8_t>& c0, uint32_t header_length) {
  std::vector<RawExtension> out;
  for (uint64_t off = header_length; off + 8 <= c0.size();) {
    const uint32_t type = LoadBE32(&c0[off]), len = LoadBE32(&c0[off + 4]);
    off += 8;
    if (type == kExtEnd || len > c0.size() - off) break;
    out.push_back({type, std::vector<uint8_t>(c0.begin() + off, c0.begin() + off + len)});
    off += (uint64_t(len) + 7) & ~uint64_t(7);
  }
  return out;
}

std::vector<uint8_t> BuildHeaderArea(std::vector<uint8_t> area, const std::vector<RawExtension>& exts,
                                     const std::string& backing_name) {
  auto append = [&](uint32_t type, const std::vector<uint8_t>& data) {
    const size_t at = area.size();
    area.resize(at + 8 + ((data.size() + 7) & ~size_t(7)), 0);
    StoreBE32(&area[at], type);
    StoreBE32(&area[at + 4], uint32_t(data.size()));
    if (!data.empty()) std::memcpy(&area[at + 8], data.data(), data.size());
  };
  for (const RawExtension& e : exts) append(e.type, e.data);
  append(kExtEnd, {});
  const uint64_t name_offset = backing_name.empty() ? 0 : area.size();
  area.insert(area.end(), backing_name.begin(), backing_name.end());
  StoreBE64(&area[8], name_offset);
  StoreBE32(&area[16], uint32_t(backing_name.size()));
  return area;
}

std::vector<uint8_t> Header::EncodeFixed() const {
  const uint32_t len = version >= 3 ? header_length : kV2HeaderSize;
  std::vector<uint8_t> b(len, 0);
  uint8_t* p = b.data();
  StoreBE32(p + 0, magic);
  StoreBE32(p + 4, version);
  StoreBE64(p + 8, backing_file_offset);
  StoreBE32(p + 16, backing_file_size);
  StoreBE32(p + 20, cluster_bits);
  StoreBE64(p + 24, size);
  StoreBE32(p + 32, crypt_method);
  StoreBE32(p + 36, l1_size);
  StoreBE64(p + 40, l1_table_offset);
  StoreBE64(p + 48, refcount_table_offset);
  StoreBE32(p + 56, refcount_table_clusters);
  StoreBE32(p + 60, nb_snapshots);
  StoreBE64(p + 64, snapshots_offset);
  if (version >= 3) {
    StoreBE64(p + 72, incompatible_features);
    StoreBE64(p + 80, compatible_features);
    StoreBE64(p + 88, autoclear_features);
    StoreBE32(p + 96, refcount_order);
    StoreBE32(p + 100, header_length);
    if (header_length > 104) p[104] = compression_type;
  }
  return b;
}

Result<Header> Header::Read(const io::File& file) {
  uint8_t fixed[kV3HeaderSize];
  if (file.Size() < kV2HeaderSize) return Corrupt("file is too short for a qcow2 header");
  IMGFS_RETURN_IF_ERROR(file.PRead(0, fixed, sizeof fixed));
  Header h;
  const uint8_t* p = fixed;
  h.magic = LoadBE32(p);
  if (h.magic != kMagic) return InvalidArgument("not a qcow2 image (bad magic)");
  h.version = LoadBE32(p + 4);
  if (h.version != 2 && h.version != 3)
    return Unsupported("qcow2 version " + std::to_string(h.version));
  h.backing_file_offset = LoadBE64(p + 8);
  h.backing_file_size = LoadBE32(p + 16);
  h.cluster_bits = LoadBE32(p + 20);
  h.size = LoadBE64(p + 24);
  h.crypt_method = LoadBE32(p + 32);
  h.l1_size = LoadBE32(p + 36);
  h.l1_table_offset = LoadBE64(p + 40);
  h.refcount_table_offset = LoadBE64(p + 48);
  h.refcount_table_clusters = LoadBE32(p + 56);
  h.nb_snapshots = LoadBE32(p + 60);
  h.snapshots_offset = LoadBE64(p + 64);
  if (h.version >= 3) {
    h.incompatible_features = LoadBE64(p + 72);
    h.compatible_features = LoadBE64(p + 80);
    h.autoclear_features = LoadBE64(p + 88);
    h.refcount_order = LoadBE32(p + 96);
    h.header_length = LoadBE32(p + 100);
    // The specification asks for a multiple of 8; qemu reads any length.
    if (h.header_length < kV3HeaderSize) return Corrupt("invalid header_length " + std::to_string(h.header_length));
  } else {
    h.refcount_order = 4;
    h.header_length = kV2HeaderSize;
  }

  if (h.cluster_bits < kMinClusterBits || h.cluster_bits > kMaxClusterBits)
    return Corrupt("invalid cluster_bits " + std::to_string(h.cluster_bits));
  const uint64_t cs = h.cluster_size();
  if (h.header_length > cs) return Corrupt("header_length exceeds the cluster size");
  if (h.refcount_order > 6) return Corrupt("invalid refcount_order " + std::to_string(h.refcount_order));

  // Fields past 104 (compression type) are read from the first cluster.
  std::vector<uint8_t> c0(cs);
  IMGFS_RETURN_IF_ERROR(file.PRead(0, c0.data(), cs));
  if (h.version >= 3 && h.header_length > 104) h.compression_type = c0[104];

  if (h.l1_table_offset % cs) return Corrupt("L1 table offset is not cluster aligned");
  // At 0 (over the header) it is refused at open, save for a check.
  if (h.refcount_table_offset % cs) return Corrupt("refcount table offset is invalid");
  if (uint64_t(h.l1_size) * 8 > kMaxL1Bytes) return Corrupt("L1 table is too large");
  if (uint64_t(h.refcount_table_clusters) << h.cluster_bits > kMaxRefTableBytes)
    return Corrupt("refcount table is too large");
  if (h.l1_size < L1EntriesFor(h.size, h.cluster_bits, (h.incompatible_features & kIncompatExtendedL2) != 0))
    return Corrupt("L1 table is too small for the virtual size");
  if (h.nb_snapshots && h.snapshots_offset % cs)
    return Corrupt("snapshot table offset is not cluster aligned");

  // Header extensions: between the fixed header and the backing file name,
  // or the end of cluster 0 (as qemu reads them: none where the name
  // starts inside the fixed header).
  const uint64_t ext_end = h.backing_file_offset ? std::min<uint64_t>(h.backing_file_offset, cs) : cs;
  uint64_t off = h.header_length;
  while (off < ext_end) {
    if (ext_end - off < 8) return Corrupt("a header extension overruns the backing file name");
    uint32_t type = LoadBE32(&c0[off]);
    uint32_t len = LoadBE32(&c0[off + 4]);
    off += 8;
    // The end marker's length too, as qemu reads it.
    if (len > ext_end - off) {
      char hex[16];
      std::snprintf(hex, sizeof hex, "0x%08x", type);
      return Corrupt(std::string("header extension ") + hex + " overruns the header cluster");
    }
    if (type == kExtEnd) break;
    const char* data = reinterpret_cast<const char*>(&c0[off]);
    switch (type) {
      case kExtBackingFormat: h.backing_format.assign(data, strnlen(data, len)); break;
      case kExtBitmaps:
        h.bitmaps_ext_len = len;
        if (len >= 24) {
          h.has_bitmaps_ext = true;
          h.nb_bitmaps = LoadBE32(&c0[off]);
          h.bitmaps_reserved = LoadBE32(&c0[off + 4]);
          h.bitmap_directory_size = LoadBE64(&c0[off + 8]);
          h.bitmap_directory_offset = LoadBE64(&c0[off + 16]);
        }
        break;
      case kExtCrypto:
        if (len != 16) return Corrupt("the encryption header extension is not 16 bytes");
        h.has_crypto_ext = true;
        h.crypto_offset = LoadBE64(&c0[off]);
        h.crypto_length = LoadBE64(&c0[off + 8]);
        break;
      case kExtDataFile: h.data_file.assign(data, strnlen(data, len)); break;
      default: break;  // feature table and unknown extensions: ignore
    }
    off += (uint64_t(len) + 7) & ~uint64_t(7);
  }

  if (h.backing_file_offset) {
    if (h.backing_file_size > 1023) return Corrupt("invalid backing file name length");
    if (h.backing_file_offset > cs || h.backing_file_size > cs - h.backing_file_offset)  // no wrap-around
      return Corrupt("backing file name lies outside the header cluster");
    // As qemu reads it: a C string (up to a NUL), empty for no backing file.
    const char* name = reinterpret_cast<const char*>(&c0[h.backing_file_offset]);
    h.backing_file.assign(name, strnlen(name, h.backing_file_size));
  }
  return h;
}

}  // namespace imgfs::qcow2
