#include "formats/vhdx/vhdx_format.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>

#include "base/crc32c.h"
#include "base/endian.h"

namespace imgfs::vhdx {

namespace {
int HexDigit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// The CRC-32C of `n` bytes with the 4-byte checksum field at `at` read as zero.
uint32_t ChecksumWithHole(const uint8_t* p, size_t n, size_t at) {
  static const uint8_t kZero[4] = {};
  uint32_t c = Crc32c(p, at);
  c = Crc32c(kZero, 4, c);
  return Crc32c(p + at + 4, n - at - 4, c);
}
}  // namespace

Guid Guid::FromText(const char* text) {
  // The text's byte order: Data1 (4 bytes), Data2, Data3 (2 each), then 8
  // bytes; the first three are stored little-endian.
  static const int kOrder[16] = {3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15};
  uint8_t seq[16];
  size_t n = 0;
  for (const char* c = text; *c && n < 16; ++c) {
    if (*c == '-') continue;
    const int hi = HexDigit(c[0]), lo = c[1] ? HexDigit(c[1]) : -1;
    if (hi < 0 || lo < 0) return Guid{};
    seq[n++] = uint8_t(hi << 4 | lo);
    ++c;
  }
  if (n != 16) return Guid{};
  Guid g;
  for (int i = 0; i < 16; ++i) g.b[kOrder[i]] = seq[i];
  return g;
}

Guid Guid::Load(const uint8_t* p) {
  Guid g;
  std::memcpy(g.b.data(), p, 16);
  return g;
}

Guid Guid::Random() {
  static thread_local std::random_device rd;
  Guid g;
  for (size_t i = 0; i < 16; i += 4) {
    const uint32_t r = rd();
    std::memcpy(&g.b[i], &r, 4);
  }
  g.b[7] = uint8_t((g.b[7] & 0x0f) | 0x40);  // Data3's high nibble: version 4
  g.b[8] = uint8_t((g.b[8] & 0x3f) | 0x80);  // the variant
  return g;
}

void Guid::Store(uint8_t* p) const { std::memcpy(p, b.data(), 16); }

bool Guid::zero() const {
  return std::all_of(b.begin(), b.end(), [](uint8_t x) { return x == 0; });
}

std::string Guid::ToText() const {
  char out[40];
  std::snprintf(out, sizeof out, "%08x-%04x-%04x-%02x%02x-%02x%02x%02x%02x%02x%02x", LoadLE32(&b[0]),
                LoadLE16(&b[4]), LoadLE16(&b[6]), b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return out;
}

const Guid kBatRegion = Guid::FromText("2DC27766-F623-4200-9D64-115E9BFD4A08");
const Guid kMetadataRegion = Guid::FromText("8B7CA206-4790-4B9A-B8FE-575F050F886E");
const Guid kFileParametersItem = Guid::FromText("CAA16737-FA36-4D43-B3B6-33F0AA44E76B");
const Guid kVirtualDiskSizeItem = Guid::FromText("2FA54224-CD1B-4876-B211-5DBED83BF4B8");
const Guid kPage83Item = Guid::FromText("BECA12AB-B2E6-4523-93EF-C309E000C746");
const Guid kLogicalSectorItem = Guid::FromText("8141BF1D-A96F-4709-BA47-F233A8FAAB5F");
const Guid kPhysicalSectorItem = Guid::FromText("CDA348C7-445D-4471-9CC9-E9885251C556");
const Guid kParentLocatorItem = Guid::FromText("A8D35F2D-B30B-454D-ABF7-D3D84834AB0C");
const Guid kVhdxParentLocatorType = Guid::FromText("B04AEFB7-D19E-4A81-B789-25B8E9445913");

Result<Header> ParseHeader(const uint8_t* p) {
  if (std::memcmp(p, "head", 4)) return Corrupt("no header signature");
  if (LoadLE32(p + 4) != ChecksumWithHole(p, kHeaderBytes, 4)) return Corrupt("header checksum mismatch");
  Header h;
  h.sequence = LoadLE64(p + 8);
  h.file_write = Guid::Load(p + 16);
  h.data_write = Guid::Load(p + 32);
  h.log = Guid::Load(p + 48);
  h.log_version = LoadLE16(p + 64);
  h.version = LoadLE16(p + 66);
  h.log_length = LoadLE32(p + 68);
  h.log_offset = LoadLE64(p + 72);
  if (h.version != 1) return Corrupt("header version " + std::to_string(h.version) + " (1 is known)");
  return h;
}

void StoreHeader(const Header& h, uint8_t* p) {
  std::memset(p, 0, kHeaderBytes);
  std::memcpy(p, "head", 4);
  StoreLE64(p + 8, h.sequence);
  h.file_write.Store(p + 16);
  h.data_write.Store(p + 32);
  h.log.Store(p + 48);
  StoreLE16(p + 64, h.log_version);
  StoreLE16(p + 66, h.version);
  StoreLE32(p + 68, h.log_length);
  StoreLE64(p + 72, h.log_offset);
  StoreLE32(p + 4, ChecksumWithHole(p, kHeaderBytes, 4));
}

Result<std::vector<Region>> ParseRegionTable(const uint8_t* p) {
  if (std::memcmp(p, "regi", 4)) return Corrupt("no region table signature");
  if (LoadLE32(p + 4) != ChecksumWithHole(p, kRegionTableBytes, 4)) return Corrupt("region table checksum mismatch");
  const uint32_t count = LoadLE32(p + 8);
  if (count > kMaxTableEntries) return Corrupt("region table with " + std::to_string(count) + " entries");
  std::vector<Region> out;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = p + 16 + i * 32;
    Region r{Guid::Load(e), LoadLE64(e + 16), LoadLE32(e + 24), (LoadLE32(e + 28) & 1) != 0};
    if (r.offset < kMiB || r.offset % kMiB || r.length % kMiB || !r.length || r.offset > (uint64_t(1) << 56))
      return Corrupt("region " + r.id.ToText() + " is not placed on whole MiB");
    for (const Region& o : out)
      if (o.id == r.id) return Corrupt("region " + r.id.ToText() + " is listed twice");
    out.push_back(r);
  }
  return out;
}

void StoreRegionTable(const std::vector<Region>& regions, uint8_t* p) {
  std::memset(p, 0, kRegionTableBytes);
  std::memcpy(p, "regi", 4);
  StoreLE32(p + 8, uint32_t(regions.size()));
  for (size_t i = 0; i < regions.size(); ++i) {
    uint8_t* e = p + 16 + i * 32;
    regions[i].id.Store(e);
    StoreLE64(e + 16, regions[i].offset);
    StoreLE32(e + 24, regions[i].length);
    StoreLE32(e + 28, regions[i].required ? 1 : 0);
  }
  StoreLE32(p + 4, ChecksumWithHole(p, kRegionTableBytes, 4));
}

Result<std::vector<MetadataEntry>> ParseMetadataTable(const uint8_t* p) {
  if (std::memcmp(p, "metadata", 8)) return Corrupt("no metadata table signature");
  const uint16_t count = LoadLE16(p + 10);
  if (count > kMaxTableEntries) return Corrupt("metadata table with " + std::to_string(count) + " entries");
  std::vector<MetadataEntry> out;
  for (uint32_t i = 0; i < count; ++i) {
    const uint8_t* e = p + 32 + i * 32;
    const uint32_t flags = LoadLE32(e + 24);
    MetadataEntry m{Guid::Load(e), LoadLE32(e + 16), LoadLE32(e + 20), (flags & 1) != 0, (flags & 2) != 0,
                    (flags & 4) != 0};
    if (m.length > kMaxItemBytes) return Corrupt("metadata item " + m.id.ToText() + " is larger than 1 MiB");
    if (m.length ? m.offset < kMetadataTableBytes : m.offset != 0)
      return Corrupt("metadata item " + m.id.ToText() + " overlaps the metadata table");
    for (const MetadataEntry& o : out)
      if (o.id == m.id && o.is_user == m.is_user) return Corrupt("metadata item " + m.id.ToText() + " is listed twice");
    out.push_back(m);
  }
  return out;
}

void StoreMetadataTable(const std::vector<MetadataEntry>& entries, uint8_t* p) {
  std::memset(p, 0, kMetadataTableBytes);
  std::memcpy(p, "metadata", 8);
  StoreLE16(p + 10, uint16_t(entries.size()));
  for (size_t i = 0; i < entries.size(); ++i) {
    uint8_t* e = p + 32 + i * 32;
    const MetadataEntry& m = entries[i];
    m.id.Store(e);
    StoreLE32(e + 16, m.offset);
    StoreLE32(e + 20, m.length);
    StoreLE32(e + 24, (m.is_user ? 1 : 0) | (m.is_virtual_disk ? 2 : 0) | (m.is_required ? 4 : 0));
  }
}

const std::string* ParentLocator::Find(const std::string& key) const {
  for (const auto& [k, v] : entries)
    if (k == key) return &v;
  return nullptr;
}

Result<ParentLocator> ParseParentLocator(const uint8_t* p, size_t len) {
  if (len < 20) return Corrupt("parent locator shorter than its header");
  ParentLocator loc;
  loc.type = Guid::Load(p);
  const uint16_t count = LoadLE16(p + 18);
  if (20 + size_t(count) * 12 > len) return Corrupt("parent locator entries run past the item");
  for (uint16_t i = 0; i < count; ++i) {
    const uint8_t* e = p + 20 + i * 12;
    const uint64_t ko = LoadLE32(e), vo = LoadLE32(e + 4), kl = LoadLE16(e + 8), vl = LoadLE16(e + 10);
    if (ko + kl > len || vo + vl > len || !kl || !vl) return Corrupt("parent locator entry out of the item");
    IMGFS_ASSIGN_OR_RETURN(std::string key, Utf16ToUtf8(p + ko, kl));
    IMGFS_ASSIGN_OR_RETURN(std::string value, Utf16ToUtf8(p + vo, vl));
    if (loc.Find(key)) return Corrupt("parent locator key '" + key + "' given twice");
    loc.entries.emplace_back(std::move(key), std::move(value));
  }
  return loc;
}

std::vector<uint8_t> StoreParentLocator(const ParentLocator& loc) {
  std::vector<uint8_t> out(20 + loc.entries.size() * 12, 0);
  loc.type.Store(out.data());
  StoreLE16(&out[18], uint16_t(loc.entries.size()));
  for (size_t i = 0; i < loc.entries.size(); ++i) {
    const std::vector<uint8_t> k = Utf8ToUtf16(loc.entries[i].first), v = Utf8ToUtf16(loc.entries[i].second);
    uint8_t* e = &out[20 + i * 12];
    StoreLE32(e, uint32_t(out.size()));
    StoreLE16(e + 8, uint16_t(k.size()));
    StoreLE32(e + 4, uint32_t(out.size() + k.size()));
    StoreLE16(e + 10, uint16_t(v.size()));
    out.insert(out.end(), k.begin(), k.end());
    out.insert(out.end(), v.begin(), v.end());
  }
  return out;
}

Result<std::string> Utf16ToUtf8(const uint8_t* p, size_t bytes) {
  if (bytes % 2) return Corrupt("UTF-16 text of an odd length");
  std::string out;
  for (size_t i = 0; i < bytes; i += 2) {
    uint32_t c = LoadLE16(p + i);
    if (c >= 0xdc00 && c < 0xe000) return Corrupt("unpaired UTF-16 surrogate");
    if (c >= 0xd800 && c < 0xdc00) {
      if (i + 4 > bytes) return Corrupt("unpaired UTF-16 surrogate");
      const uint32_t lo = LoadLE16(p + i + 2);
      if (lo < 0xdc00 || lo >= 0xe000) return Corrupt("unpaired UTF-16 surrogate");
      c = 0x10000 + ((c - 0xd800) << 10) + (lo - 0xdc00);
      i += 2;
    }
    if (c == 0) return Corrupt("NUL in UTF-16 text");
    if (c < 0x80) {
      out += char(c);
    } else if (c < 0x800) {
      out += char(0xc0 | c >> 6);
      out += char(0x80 | (c & 0x3f));
    } else if (c < 0x10000) {
      out += char(0xe0 | c >> 12);
      out += char(0x80 | ((c >> 6) & 0x3f));
      out += char(0x80 | (c & 0x3f));
    } else {
      out += char(0xf0 | c >> 18);
      out += char(0x80 | ((c >> 12) & 0x3f));
      out += char(0x80 | ((c >> 6) & 0x3f));
      out += char(0x80 | (c & 0x3f));
    }
  }
  return out;
}

std::vector<uint8_t> Utf8ToUtf16(const std::string& s) {
  std::vector<uint8_t> out;
  auto put = [&out](uint32_t u) {
    out.push_back(uint8_t(u));
    out.push_back(uint8_t(u >> 8));
  };
  for (size_t i = 0; i < s.size();) {
    const uint8_t c = uint8_t(s[i]);
    const int n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 1;
    uint32_t u = n == 1 ? c : n == 2 ? c & 0x1f : n == 3 ? c & 0x0f : c & 0x07;
    for (int k = 1; k < n && i + k < s.size(); ++k) u = u << 6 | (uint8_t(s[i + k]) & 0x3f);
    i += n;
    if (u >= 0x10000) {
      u -= 0x10000;
      put(0xd800 + (u >> 10));
      put(0xdc00 + (u & 0x3ff));
    } else {
      put(u);
    }
  }
  return out;
}

}  // namespace imgfs::vhdx
