// Extended attributes on disk.raw and on the image's directory: what the
// image is (read) and control operations (write), for users with only a
// shell: getfattr -d -m user.imgfs, setfattr -n user.imgfs.resize -v +1G.
#include <sys/xattr.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "errno_map.h"
#include "imagecore/format.h"
#include "imagecore/ops.h"
#include "ops.h"

namespace imgfs::fs {

namespace {

// A name on a line of its own: a newline (qemu-img accepts one in a
// snapshot name) is written \n and a backslash \\, so lines stay names.
std::string OneLine(const std::string& name) {
  std::string out;
  for (char c : name) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

constexpr const char* kPrefix = "user.imgfs.";

// Readable attributes, in listing order. The control attributes read as
// the running command's progress, or else the last command's outcome.
const char* const kInfoNames[] = {"format", "virtual_size", "cluster_size", "allocated", "backing_file",
                                  "backing_format", "chain_depth", "snapshots", "dirty", "corrupt", "read_only",
                                  "encrypted"};
const char* const kControlNames[] = {"resize", "snapshot.create", "snapshot.delete", "snapshot.apply", "commit"};

bool HasAttributes(const NodeRef& n) { return n.kind == NodeKind::kDisk || n.kind == NodeKind::kImageDir; }

bool Valid(FsContext& ctx, const NodeRef& n) { return HasAttributes(n) && n.image < ctx.ns.size(); }

// The format's own fields (as `imgfs info` shows them) are attributes
// too, named with '_' for '-': user.imgfs.create_type, user.imgfs.cid...
std::string AttrName(const std::string& info_key) {
  std::string k = info_key;
  std::replace(k.begin(), k.end(), '-', '_');
  return k;
}

std::string FieldText(const ImageInfo::Field& f) {
  switch (f.kind) {
    case ImageInfo::Field::kString: return OneLine(f.s);
    case ImageInfo::Field::kBool: return f.b ? "1" : "0";
    case ImageInfo::Field::kInt: return std::to_string(f.i);
    case ImageInfo::Field::kUint: return std::to_string(f.u);
    case ImageInfo::Field::kBitmaps: return "";
    case ImageInfo::Field::kList:
    case ImageInfo::Field::kObject: break;
  }
  // One line per item: its values in order, separated by spaces, a file
  // name last (it may hold spaces itself).
  std::string out;
  for (const auto& item : f.list) {
    std::string line, name;
    for (const auto& v : item) {
      if (v.file_name) name = FieldText(v);
      else line += (line.empty() ? "" : " ") + FieldText(v);
    }
    if (!name.empty()) line += " " + name;
    out += (out.empty() ? "" : "\n") + line;
  }
  return out;
}

std::optional<std::string> SpecificValue(const ImageInfo& info, const std::string& key) {
  for (const auto& f : info.specific)
    if (f.kind != ImageInfo::Field::kBitmaps && AttrName(f.key) == key) return FieldText(f);
  return std::nullopt;
}

// The value of user.imgfs.<key> for image i.
Result<std::string> InfoValue(FsContext& ctx, size_t i, const std::string& key) {
  ImageEntry& e = ctx.ns.image(i);
  for (const char* c : kControlNames)
    if (key == c) return e.control.Summary();
  if (key == "read_only") {
    const std::string why = ctx.ns.WhyReadOnly(i);
    return why.empty() ? std::string("0") : "1: " + why;
  }
  if (key == "format") return e.format();
  if (key == "virtual_size") return std::to_string(e.virtual_size.load());
  IMGFS_ASSIGN_OR_RETURN(auto chain, ctx.ns.GetChain(i));
  Image& top = chain->layer(0);
  if (key == "chain_depth") return std::to_string(chain->depth());
  if (key == "encrypted") {  // no, locked (and why), or unlocked
    bool any = false;
    for (size_t d = 0; d < chain->depth(); ++d) any |= chain->layer(d).Info().encrypted;
    if (!any) return std::string("no");
    const std::string why = chain->KeyMissing(0);
    return why.empty() ? std::string("unlocked") : "locked: " + why;
  }
  if (key == "allocated") return std::to_string(top.AllocatedBytes());
  if (key == "backing_file") return top.Backing() ? top.Backing()->name : std::string();
  if (key == "backing_format") {
    if (!top.Backing()) return std::string();
    return chain->depth() > 1 ? std::string(chain->layer(1).format_name()) : top.Backing()->format;
  }
  if (key == "snapshots") {
    std::string out;
    for (const auto& s : top.Snapshots()) out += (out.empty() ? "" : "\n") + OneLine(s.name);
    return out;
  }
  const ImageInfo info = top.Info();
  if (key == "cluster_size") return std::to_string(info.cluster_size);
  if (key == "dirty") return std::string(info.dirty ? "1" : "0");
  if (key == "corrupt") return std::string(info.corrupt ? "1" : "0");
  if (auto v = SpecificValue(info, key)) return *v;
  return NotFound("no attribute user.imgfs." + key);
}

void ReplyValue(fuse_req_t req, const std::string& v, size_t size) {
  if (size == 0) fuse_reply_xattr(req, v.size());
  else if (size < v.size()) fuse_reply_err(req, ERANGE);
  else fuse_reply_buf(req, v.data(), v.size());
}

}  // namespace

void OpGetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, size_t size) {
  FsContext& ctx = Ctx(req);
  const NodeRef n = NodeOf(ino);
  const std::string nm(name);
  if (!Valid(ctx, n) || nm.rfind(kPrefix, 0) != 0) {
    fuse_reply_err(req, ENODATA);
    return;
  }
  ctx.ns.Touch(n.image);
  auto v = InfoValue(ctx, n.image, nm.substr(std::strlen(kPrefix)));
  if (!v.ok()) {
    fuse_reply_err(req, v.status().code() == Code::kNotFound ? ENODATA : ErrnoOf(v.status()));
    return;
  }
  ReplyValue(req, v.value(), size);
}

void OpListxattr(fuse_req_t req, fuse_ino_t ino, size_t size) {
  FsContext& ctx = Ctx(req);
  const NodeRef n = NodeOf(ino);
  std::string list;
  if (Valid(ctx, n)) {
    // What the format cannot do is not listed (it is refused if set).
    const Capabilities& caps = ctx.ns.image(n.image).driver->caps;
    auto shown = [&](const std::string& k) {
      if (k.rfind("snapshot", 0) == 0) return caps.internal_snapshots;
      if (k == "resize") return caps.resize;
      return true;
    };
    for (const char* k : kInfoNames)
      if (shown(k)) list += std::string(kPrefix) + k + '\0';
    for (const char* k : kControlNames)
      if (shown(k)) list += std::string(kPrefix) + k + '\0';
    auto chain = ctx.ns.GetChain(n.image);
    const ImageInfo info = chain.ok() ? chain.value()->layer(0).Info() : ImageInfo();
    for (const auto& f : info.specific) {
        const std::string k = AttrName(f.key);
        if (SpecificValue(info, k) &&
            std::find(std::begin(kInfoNames), std::end(kInfoNames), k) == std::end(kInfoNames))
          list += std::string(kPrefix) + k + '\0';
      }
  }
  ReplyValue(req, list, size);
}

void OpSetxattr(fuse_req_t req, fuse_ino_t ino, const char* name, const char* value, size_t size, int) {
  FsContext& ctx = Ctx(req);
  const NodeRef n = NodeOf(ino);
  if (!Valid(ctx, n)) {
    fuse_reply_err(req, ENOTSUP);
    return;
  }
  ctx.ns.Touch(n.image);
  std::string v(value, size);
  while (!v.empty() && (v.back() == '\n' || v.back() == '\0')) v.pop_back();
  auto cmd = ParseControlAttribute(name, v);
  if (!cmd.ok()) {
    // Information attributes are not writable; other names are not ours.
    const std::string nm(name);
    bool info = false;
    for (const char* k : kInfoNames) info |= nm == std::string(kPrefix) + k;
    if (cmd.status().code() != Code::kNotFound) ctx.ns.image(n.image).control.Refused(nm + "=" + v, cmd.status());
    fuse_reply_err(req, cmd.status().code() != Code::kNotFound ? EINVAL : info ? EPERM : ENOTSUP);
    return;
  }
  if (ctx.read_only) {  // the kernel refuses first on a -r mount; kept as a guard
    fuse_reply_err(req, EROFS);
    return;
  }
  Status st = ctx.ns.image(n.image).control.Run(ctx, n.image, cmd.value());
  fuse_reply_err(req, ControlErrnoOf(st));
}

void OpRemovexattr(fuse_req_t req, fuse_ino_t ino, const char*) {
  fuse_reply_err(req, Valid(Ctx(req), NodeOf(ino)) ? EPERM : ENOTSUP);
}

}  // namespace imgfs::fs
