// The VMDK text descriptor: which extents make the disk, its content ID
// and its parent's. Parsed from untrusted text: every line is bounded and
// anything not understood in an extent line is an error, never a guess.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "imagecore/status.h"

namespace imgfs::vmdk {

constexpr uint32_t kNoParent = 0xffffffff;
// A descriptor is a few KiB; a megabyte is far more than any tool writes.
constexpr size_t kMaxDescriptorBytes = 1 << 20;
constexpr size_t kMaxExtents = 4096;
// twoGbMaxExtent*: the most bytes one extent file holds.
constexpr uint64_t kSplitBytes = uint64_t(2) << 30;

// A CID as descriptors write it (8 hex digits), and a fresh random one
// (never kNoParent).
std::string CidText(uint32_t cid);
uint32_t NewCid();

enum class ExtentAccess { kRW, kRdOnly, kNoAccess };

struct ExtentLine {
  ExtentAccess access = ExtentAccess::kRW;
  uint64_t sectors = 0;
  std::string type;      // FLAT, SPARSE, ZERO, VMFS, VMFSSPARSE, SESPARSE...
  std::string file;      // as written (may be empty); none for ZERO
  bool has_file = false;
  uint64_t offset = 0;   // start sector in the file (FLAT, VMFS)
};

struct Descriptor {
  uint32_t version = 1;
  uint32_t cid = 0;
  uint32_t parent_cid = kNoParent;
  std::string create_type;
  std::optional<std::string> parent_hint;  // parentFileNameHint
  std::vector<ExtentLine> extents;
  std::vector<std::pair<std::string, std::string>> ddb;  // ddb.* keys, in order, values unquoted
};

// Whether the bytes start like a text descriptor.
bool LooksLikeDescriptor(const uint8_t* head, size_t len);
// Parses descriptor text (NUL padding ends it; CRLF and # comments allowed).
Result<Descriptor> ParseDescriptor(std::string_view text);
// The text with its extent lines replaced by `extents` (written where the
// first one was), everything else as it was.
std::string WithExtents(const std::string& text, const std::vector<ExtentLine>& extents);

}  // namespace imgfs::vmdk
