// qemu-img measure: what the source holds, measured by the output's driver.
#include "imagecore/format.h"
#include "imagecore/ops.h"
#include "imagecore/size.h"

namespace imgfs::ops {
namespace {

// The source's data runs and bitmaps.
Status Describe(const Chain& chain, MeasureInput* in) {
  in->has_source = true;
  in->size = chain.VirtualSize();
  // As qemu sees the runs: what map shows as zeros (a host file's holes
  // under data clusters of a preallocated image too) needs no cluster.
  IMGFS_ASSIGN_OR_RETURN(std::vector<MapEntry> runs, Map(chain, 0, in->size));
  for (const MapEntry& e : runs) {
    if (e.zero || !e.data || !e.present) continue;
    if (!in->data.empty() && in->data.back().first + in->data.back().second == e.start)
      in->data.back().second += e.length;
    else
      in->data.emplace_back(e.start, e.length);
  }
  const Image& top = chain.layer(0);
  in->source_keeps_bitmaps = top.StoresBitmaps();
  in->bitmaps = top.Info().bitmaps;
  return Status::OK();
}

}  // namespace

Result<MeasureResult> Measure(const MeasureRequest& req) {
  if (req.path.empty() && req.size.empty()) return InvalidArgument("Either --size N or one filename must be specified.");
  if (!req.path.empty() && !req.size.empty()) return InvalidArgument("--size N cannot be used together with a filename.");
  const FormatDriver* drv = FindFormat(req.out_format);
  if (!drv) return InvalidArgument("Unknown file format '" + req.out_format + "'");
  if (!drv->measure) return Unsupported("Block driver '" + req.out_format + "' does not support size measurement");
  CreateOptions opts;
  IMGFS_ASSIGN_OR_RETURN(opts.options, ParseOptionList(req.options));
  MeasureInput in;
  if (!req.path.empty()) {
    auto chain = OpenSourceChain(req.path, req.format, req.snapshot);
    if (!chain.ok()) return chain.status().Prefixed("Could not open '" + req.path + "'");
    IMGFS_RETURN_IF_ERROR(Describe(*chain.value(), &in));
  } else {
    IMGFS_ASSIGN_OR_RETURN(in.size, ParseSize(req.size));
  }
  opts.size = in.size;
  return drv->measure(opts, in);
}

std::string MeasureHuman(const MeasureResult& r) {
  std::string out = "required size: " + std::to_string(r.required) + "\n";
  out += "fully allocated size: " + std::to_string(r.fully_allocated) + "\n";
  if (r.has_bitmaps) out += "bitmaps size: " + std::to_string(r.bitmaps) + "\n";
  return out;
}

std::string MeasureJson(const MeasureResult& r) {
  std::string out = "{\n";
  if (r.has_bitmaps) out += "    \"bitmaps\": " + std::to_string(r.bitmaps) + ",\n";
  out += "    \"required\": " + std::to_string(r.required) + ",\n";
  out += "    \"fully-allocated\": " + std::to_string(r.fully_allocated) + "\n}\n";
  return out;
}

}  // namespace imgfs::ops
