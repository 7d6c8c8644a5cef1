// qemu-img map: the runs of a disk, where each is stored and in which
// layer, merged as qemu-img merges them so that scripts see the same list.
#include <algorithm>
#include <cinttypes>
#include <cstdio>

#include "imagecore/ops.h"

namespace imgfs::ops {
namespace {

// A stored run of `r` (kData), split where its host file has a hole when
// `host_holes`: the format maps it (data), the host holds no bytes there
// (zero), as qemu's protocol layer reports it; past the end of the file
// reads as zeros too.
MapEntry StoredRun(const Resolved& r, bool host_holes) {
  MapEntry e;
  e.data = true;
  e.present = true;
  e.depth = r.depth;
  e.has_offset = true;
  e.offset = r.host_offset;
  e.filename = r.file->path();
  e.length = r.length;
  if (!host_holes) return e;
  const uint64_t host = r.host_offset, size = r.file->Size();
  if (host >= size) {
    e.zero = true;
    return e;
  }
  const uint64_t hole = r.file->Seek(host, /*want_data=*/false);
  if (hole > host) {
    e.length = std::min(hole - host, r.length);
    return e;
  }
  const uint64_t data = r.file->Seek(host, /*want_data=*/true);
  e.zero = true;
  e.length = std::min(std::max(data, host + 1) - host, r.length);
  return e;
}

MapEntry EntryOf(const Chain& chain, const Resolved& r) {
  if (r.kind == Resolved::kData) return StoredRun(r, chain.layer(r.depth).MapShowsHostHoles());
  MapEntry e;
  e.length = r.length;
  e.present = r.present;
  e.depth = r.present ? r.depth : r.depth - 1;
  if (r.kind == Resolved::kOpaque) {  // compressed: stored, but not as the bytes themselves
    e.data = true;
    return e;
  }
  e.zero = true;
  e.data = r.mapped_hole;
  if (r.file) {
    e.has_offset = true;
    e.offset = r.host_offset;
    e.filename = r.file->path();
  }
  return e;
}

bool Mergeable(const MapEntry& a, const MapEntry& b) {
  if (a.length == 0) return false;
  if (a.zero != b.zero || a.data != b.data || a.depth != b.depth || a.present != b.present) return false;
  if (a.filename != b.filename || a.has_offset != b.has_offset) return false;
  return !a.has_offset || a.offset + a.length == b.offset;
}
}  // namespace

Result<std::vector<MapEntry>> Map(const Chain& chain, uint64_t start, uint64_t length) {
  const uint64_t size = chain.VirtualSize();
  const uint64_t end = start >= size ? start : start + std::min(length, size - start);
  std::vector<MapEntry> out;
  for (uint64_t off = start; off < end;) {
    Resolved r;
    IMGFS_RETURN_IF_ERROR(chain.Resolve(0, off, end - off, &r));
    MapEntry e = EntryOf(chain, r);
    e.start = off;
    off += e.length;
    if (!out.empty() && Mergeable(out.back(), e)) {
      out.back().length += e.length;
    } else {
      out.push_back(std::move(e));
    }
  }
  if (out.empty()) {  // nothing to map: qemu-img shows one empty run
    out.emplace_back();
    out.back().start = start;
  }
  return out;
}

std::string MapJson(const std::vector<MapEntry>& entries) {
  std::string out = "[";
  char buf[256];
  for (size_t i = 0; i < entries.size(); ++i) {
    const MapEntry& e = entries[i];
    std::snprintf(buf, sizeof buf,
                  "{ \"start\": %" PRIu64 ", \"length\": %" PRIu64 ", \"depth\": %zu, \"present\": %s, \"zero\": %s, "
                  "\"data\": %s",
                  e.start, e.length, e.depth, e.present ? "true" : "false", e.zero ? "true" : "false",
                  e.data ? "true" : "false");
    out += buf;
    if (e.has_offset) out += ", \"offset\": " + std::to_string(e.offset);
    out += i + 1 < entries.size() ? "},\n" : "}";
  }
  return out + "]\n";
}

Status MapHuman(std::vector<MapEntry> entries, std::string* out) {
  *out = "Offset          Length          Mapped to       File\n";
  char buf[128];
  for (size_t i = 0; i < entries.size(); ++i) {
    MapEntry& e = entries[i];
    // The table does not tell zeros from holes: qemu-img folds every run
    // after the first that is not plain data into "not stored" first.
    if (i > 0 && (!e.data || e.zero)) e.data = false;
    if (e.data && !e.has_offset) return Unsupported("File contains external, encrypted or compressed clusters.");
    if (!e.data || e.zero) continue;
    std::snprintf(buf, sizeof buf, "%#-16" PRIx64 "%#-16" PRIx64 "%#-16" PRIx64, e.start, e.length, e.offset);
    *out += buf + e.filename + "\n";
  }
  return Status::OK();
}

}  // namespace imgfs::ops
