// The one way down a backing chain: where each backing file is
// (ResolveBacking) and the walk with its loop check and depth bound.
#include <cctype>
#include <set>

#include "imagecore/chain.h"
#include "imagecore/file.h"

namespace imgfs {
namespace {

bool IsWindowsName(const std::string& name) {
  const bool drive = name.size() >= 2 && std::isalpha(static_cast<unsigned char>(name[0])) && name[1] == ':';
  return drive || name.find('\\') != std::string::npos;
}

// The names to try for one stored name, best first.
std::vector<std::string> Candidates(const std::string& child_path, const std::string& stored) {
  if (!IsWindowsName(stored)) return {ResolveNamedPath(child_path, stored)};
  std::string slashed = stored;
  for (char& c : slashed)
    if (c == '\\') c = '/';
  while (slashed.rfind("./", 0) == 0) slashed.erase(0, 2);  // as in Hyper-V's ".\Name.avhdx"
  const bool drive = slashed.size() >= 2 && slashed[1] == ':';
  // As it is first: a Linux file name may hold backslashes.
  std::vector<std::string> out = {ResolveNamedPath(child_path, stored)};
  // A relative Windows path is relative here too; an absolute one (a drive
  // or a leading backslash) names a place on another machine.
  if (!drive && slashed[0] != '/') out.push_back(ResolveNamedPath(child_path, slashed));
  const size_t cut = slashed.find_last_of('/');
  std::string base = cut == std::string::npos ? slashed.substr(drive ? 2 : 0) : slashed.substr(cut + 1);
  if (!base.empty()) out.push_back(ResolveNamedPath(child_path, base));
  return out;
}

}  // namespace

std::string ResolveBacking(const std::string& child_path, const BackingRef& ref, const FileOpener* files) {
  const FileOpener& f = files ? *files : HostFiles();
  std::string first;
  std::vector<std::string> names = {ref.name};
  names.insert(names.end(), ref.alternates.begin(), ref.alternates.end());
  for (const std::string& stored : names) {
    for (const std::string& c : Candidates(child_path, stored)) {
      if (first.empty()) first = c;
      if (f.Exists(c)) return c;
    }
  }
  return first.empty() ? ResolveNamedPath(child_path, ref.name) : first;
}

Status WalkChain(const std::string& path, const std::string& format, const FileOpener* files,
                 const std::function<Result<std::unique_ptr<Image>>(const LayerRef&)>& open,
                 const std::function<Result<bool>(const LayerRef&, std::unique_ptr<Image>, const Status&)>& visit) {
  const FileOpener& host = files ? *files : HostFiles();
  std::set<std::string> seen;
  LayerRef ref{0, path, format};
  const Image* above = nullptr;  // kept alive by visit until its next call
  std::string above_name;        // the name the layer above stores for this one
  for (;; ++ref.depth) {
    if (ref.depth >= kMaxChainDepth)
      return Unsupported(path + ": backing chain deeper than " + std::to_string(kMaxChainDepth));
    // As qemu-img: a chain that comes back to one of its files is an error.
    if (!seen.insert(host.RealPath(ref.path)).second)
      return InvalidArgument("Backing file '" + above_name + "' creates an infinite loop.");
    auto img = open(ref);
    if (!img.ok()) return ref.depth == 0 ? img.status() : img.status().Prefixed(path + ": cannot open backing file");
    const Image* cur = img.value().get();
    const Status link = above ? above->CheckParent(*cur) : Status::OK();
    std::optional<BackingRef> backing = cur->Backing();
    IMGFS_ASSIGN_OR_RETURN(bool more, visit(ref, std::move(img).value(), link));
    if (!more || !backing) return Status::OK();
    above = cur;
    above_name = backing->name;
    ref.path = ResolveBacking(ref.path, *backing, files);
    ref.format = backing->format;
  }
}

}  // namespace imgfs
