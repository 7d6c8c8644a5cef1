// Internal snapshots: listing them as qemu-img does, and naming their views.
#include <cstdio>
#include <cstring>
#include <ctime>
#include <map>
#include <set>

#include "imagecore/ops.h"
#include "imagecore/size.h"

namespace imgfs::ops {

Result<std::vector<SnapshotInfo>> ListSnapshots(const std::string& path, const std::string& format) {
  IMGFS_ASSIGN_OR_RETURN(auto img, OpenImage(path, format, OpenOptions{}));
  return img->Snapshots();
}

Status ChangeSnapshot(Chain& chain, SnapshotAction action, const std::string& name) {
  if (chain.layer(0).read_only()) return ReadOnly(chain.layer_path(0) + ": " + chain.layer(0).read_only_reason());
  switch (action) {
    case SnapshotAction::kCreate: return chain.CreateSnapshot(name);
    case SnapshotAction::kApply: return chain.ApplySnapshot(name);
    case SnapshotAction::kDelete: return chain.DeleteSnapshot(name);
  }
  return Status::OK();
}

Status ChangeSnapshot(const std::string& path, const std::string& format, SnapshotAction action,
                      const std::string& name) {
  // The image alone: its backing chain plays no part in snapshot control.
  IMGFS_ASSIGN_OR_RETURN(auto img, OpenImage(path, format, OpenOptions{true}));
  if (img->read_only()) return ReadOnly(path + ": " + img->read_only_reason());
  switch (action) {
    case SnapshotAction::kCreate: return img->CreateSnapshot(name);
    case SnapshotAction::kApply: return img->ApplySnapshot(name);
    case SnapshotAction::kDelete: return img->DeleteSnapshot(name);
  }
  return Status::OK();
}

std::string SnapshotTable(const std::vector<SnapshotInfo>& snaps) {
  std::string out;
  char line[512];
  std::snprintf(line, sizeof line, "%-10s%-17s%8s%20s%13s%11s\n", "ID", "TAG", "VM SIZE", "DATE", "VM CLOCK", "ICOUNT");
  out += line;
  for (const auto& s : snaps) {
    char date[32], clock[32], icount[32] = "";
    std::time_t t = s.date_sec;
    std::strftime(date, sizeof date, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
    const uint64_t ms = s.vm_clock_nsec / 1000000;
    std::snprintf(clock, sizeof clock, "%02llu:%02llu:%02llu.%03llu", (unsigned long long)(ms / 3600000),
                  (unsigned long long)(ms / 60000 % 60), (unsigned long long)(ms / 1000 % 60),
                  (unsigned long long)(ms % 1000));
    if (s.icount != UINT64_MAX) std::snprintf(icount, sizeof icount, "%llu", (unsigned long long)s.icount);
    std::snprintf(line, sizeof line, "%-9s %-16s %8s%20s%13s%11s\n", s.id.c_str(), s.name.c_str(),
                  HumanSize(s.vm_state_size).c_str(), date, clock, icount);
    out += line;
  }
  return out;
}

namespace {
constexpr size_t kNameMax = 255;  // bytes in a file name (NAME_MAX)

// "<id>-<name>" cut to fit a file name, with a hash of the whole ID and
// name so that it stays the same from one listing to the next and names
// one snapshot only. The cut never splits a UTF-8 character.
std::string Shortened(const SnapshotInfo& s, std::string stem) {
  uint64_t h = 1469598103934665603ULL;  // FNV-1a
  for (const std::string* part : {&s.id, &s.name}) {
    for (unsigned char c : *part) h = (h ^ c) * 1099511628211ULL;
    h = (h ^ 0xff) * 1099511628211ULL;
  }
  char tail[32];
  std::snprintf(tail, sizeof tail, "~%016llx.raw", static_cast<unsigned long long>(h));
  size_t keep = kNameMax - std::strlen(tail);
  while (keep > 0 && (static_cast<unsigned char>(stem[keep]) & 0xc0) == 0x80) --keep;
  return stem.substr(0, keep) + tail;
}
}  // namespace

std::vector<std::string> SnapshotFileNames(const std::vector<SnapshotInfo>& snaps) {
  std::map<std::string, int> uses;
  for (const auto& s : snaps) ++uses[s.name];
  auto plain = [&](const SnapshotInfo& s) {
    return !s.name.empty() && uses[s.name] == 1 && s.name.find_first_of(std::string("/\0", 2)) == std::string::npos &&
           s.name.size() + 4 <= kNameMax;
  };
  auto with_id = [](const SnapshotInfo& s) {
    std::string stem = s.id + "-" + s.name;
    for (char& c : stem)
      if (c == '/' || c == '\0') c = '_';
    return stem.size() + 4 <= kNameMax ? stem + ".raw" : Shortened(s, stem);
  };
  // A plain name that equals another snapshot's ID form (a snapshot named
  // "3-twice" beside ID 3 "twice" and another "twice") takes its ID form too.
  std::set<std::string> id_forms;
  for (const auto& s : snaps)
    if (!plain(s)) id_forms.insert(with_id(s));
  std::vector<std::string> out;
  for (const auto& s : snaps) {
    if (plain(s) && !id_forms.count(s.name + ".raw")) out.push_back(s.name + ".raw");
    else out.push_back(with_id(s));
  }
  return out;
}

}  // namespace imgfs::ops
