// qemu-img convert on every format: open the sources, make (or open) the
// target, copy, commit.
#include <algorithm>
#include <memory>
#include <vector>

#include "imagecore/format.h"
#include "imagecore/ops.h"
#include "ops/convert_copy.h"

namespace imgfs::ops {
namespace {

struct Sources {
  std::vector<std::unique_ptr<Chain>> chains;
  uint64_t total = 0;  // bytes to copy
  uint64_t from = 0;   // where in the one source they begin
};

Result<Sources> OpenSources(const ConvertRequest& req) {
  if (req.sources.empty()) return InvalidArgument("Must specify image file name");
  if (!req.snapshot.empty() && req.sources.size() > 1)
    return InvalidArgument("No support for concatenating multiple snapshot");
  Sources s;
  for (const std::string& path : req.sources) {
    auto chain = OpenSourceChain(path, req.source_format, req.snapshot);
    if (!chain.ok()) {
      if (!req.snapshot.empty()) return chain.status().Prefixed("Failed to load snapshot");
      return chain.status().Prefixed("Could not open '" + path + "'");
    }
    s.total += chain.value()->VirtualSize();
    s.chains.push_back(std::move(chain).value());
  }
  if (req.from || req.until != UINT64_MAX) {
    if (s.chains.size() != 1) return InvalidArgument("a window of the source needs exactly one source");
    const uint64_t end = std::min(req.until, s.total);
    if (req.from > end) return InvalidArgument(req.sources[0] + ": cannot skip to specified offset");
    s.from = req.from;
    s.total = end - req.from;
  }
  return s;
}

Status CheckTarget(const ConvertRequest& req, const Chain& target, uint64_t total) {
  const Image& top = target.layer(0);
  if (top.read_only()) return ReadOnly(req.target + ": " + top.read_only_reason());
  if (target.VirtualSize() < total)
    return InvalidArgument(req.target + ": the target is smaller than the source (" +
                           std::to_string(target.VirtualSize()) + " < " + std::to_string(total) + " bytes)");
  return Status::OK();
}

CopyPlan MakePlan(const ConvertRequest& req, const Sources& src, Chain* target, bool made) {
  CopyPlan plan;
  uint64_t start = 0;
  if (src.chains.size() == 1) {
    plan.sources.push_back({src.chains[0].get(), 0, src.total, src.from});
  } else {
    for (const auto& c : src.chains) {
      plan.sources.push_back({c.get(), start, c->VirtualSize()});
      start += c->VirtualSize();
    }
  }
  plan.target = target;
  plan.target_backed = target->depth() > 1;
  // A new image without backing file reads as zeros; an existing one only
  // where the caller says so.
  plan.target_zero = !plan.target_backed && ((made && !target->layer(0).caps().new_not_zero) || req.target_is_zero);
  plan.sparse_size = req.sparse_size;
  plan.workers = req.workers;
  plan.in_order = !req.out_of_order;
  plan.rate = req.rate;
  plan.salvage = req.salvage;
  plan.compress = req.compress;
  plan.progress = req.progress;
  return plan;
}

Status Validate(const ConvertRequest& req) {
  if (req.target_is_zero && !req.existing)
    return InvalidArgument("--target-is-zero requires use of -n flag");
  if (req.existing && !req.backing.empty())
    return InvalidArgument("-B and -n cannot be used together (the target exists with its own backing file)");
  if (req.compress && !CapabilitiesOf(req.target_format).compressed_writes)
    return Unsupported("Compression not supported for this file format");
  if (req.bitmaps && req.sources.size() > 1) return InvalidArgument("Copying bitmaps only possible with single source");
  return Status::OK();
}
}  // namespace

Status Convert(const ConvertRequest& req) {
  IMGFS_RETURN_IF_ERROR(Validate(req));
  IMGFS_ASSIGN_OR_RETURN(Sources src, OpenSources(req));
  BitmapCopy bitmaps;
  if (req.bitmaps) {
    IMGFS_ASSIGN_OR_RETURN(bitmaps, PlanBitmapCopy(req.sources[0], req.source_format, req.skip_broken_bitmaps));
    IMGFS_RETURN_IF_ERROR(CheckBitmapTarget(bitmaps, req.target_format, nullptr));
  }
  // The target's top layer is checked before the copy, written after it.
  auto copy = [&](Chain& target, bool made) -> Status {
    // A stream (VMDK streamOptimized) takes whole grains, each once: the
    // copy goes grain by grain, as for -c.
    IMGFS_ASSIGN_OR_RETURN(bool stream, target.layer(0).BeginStreamWrite());
    IMGFS_RETURN_IF_ERROR(CheckTarget(req, target, src.total));
    if (req.bitmaps) IMGFS_RETURN_IF_ERROR(CheckBitmapTarget(bitmaps, req.target_format, &target.layer(0)));
    CopyPlan plan = MakePlan(req, src, &target, made);
    plan.compress |= stream;
    IMGFS_RETURN_IF_ERROR(CopyImage(plan));
    if (req.bitmaps) IMGFS_RETURN_IF_ERROR(CopyBitmaps(bitmaps, target.layer(0)));
    return target.Flush();
  };
  IMGFS_ASSIGN_OR_RETURN(Output out, InspectOutput(req.target));
  std::vector<const Chain*> inputs;
  for (const auto& c : src.chains) inputs.push_back(c.get());
  IMGFS_RETURN_IF_ERROR(CheckNotAnInput(out, inputs));
  const bool device = out.kind == Output::kBlockDevice;
  if (device && !req.existing) {
    // Written in place, as qemu-img writes a disk or a stick: only the
    // disk's bytes fit there, and no backing file can be named.
    if (!CapabilitiesOf(req.target_format).plain_disk)
      return InvalidArgument(req.target + ": a block device takes a raw image only (-O raw), or -n");
    if (!req.backing.empty()) return InvalidArgument(req.target + ": a block device cannot name a backing file (-B)");
  }
  if (req.existing || device) {
    auto target = Chain::Open(out.path, req.target_format, true);
    if (!target.ok()) return target.status().Prefixed("Could not open '" + req.target + "'");
    return copy(*target.value(), false);
  }
  NewFiles files(HostFiles(), out.path);
  CreateRequest create;
  create.path = out.path;
  create.format = req.target_format;
  create.size = std::to_string(src.total);
  create.backing_file = req.backing;
  create.backing_format = req.backing_format;
  create.options = req.options;
  create.secrets = req.secrets;
  IMGFS_RETURN_IF_ERROR(StageCreate(create, &files));
  {
    IMGFS_ASSIGN_OR_RETURN(auto target, Chain::OpenThrough(out.path, req.target_format, true, files.Staged()));
    IMGFS_RETURN_IF_ERROR(copy(*target, true));
  }  // closed before its files take their names
  return files.Commit();
}

}  // namespace imgfs::ops
