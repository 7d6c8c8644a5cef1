// `check`: run a format's consistency check and report it as qemu-img does.
#include <nlohmann/json.hpp>

#include "base/json_text.h"

#include "imagecore/ops.h"

namespace imgfs::ops {

Result<CheckResult> CheckImage(const std::string& path, const std::string& format, RepairMode mode,
                               const ProgressFn& progress) {
  // A chain that comes back to one of its files cannot be opened by
  // qemu-img at all: the check cannot run (as info says).
  if (auto layers = CollectInfo(path, format, true, io::ImageAccess());
      !layers.ok() && layers.status().code() == Code::kInvalidArgument)
    return Status(Code::kIoError, path + ": " + layers.status().message());
  OpenOptions opts;
  opts.writable = mode != RepairMode::kNone;
  opts.no_repair = true;
  opts.check_only = mode == RepairMode::kNone;
  auto opened = OpenImage(path, format, opts);
  // An image that cannot be opened (even for a feature imgfs lacks) is a
  // check that could not run (1); only a format without checks gives 63.
  if (!opened.ok()) return Status(Code::kIoError, opened.status().message(), opened.status().sys_errno());
  auto& img = opened.value();
  auto r = img->Check(mode, progress);
  if (!r.ok()) return r.status().Prefixed(path);
  r->format = img->format_name();
  // Whether its backing file is the one it was made on (VMDK's parentCID):
  // a warning, as the data itself is consistent.
  if (auto backing = img->Backing()) {
    auto parent = OpenImage(ResolveBacking(path, *backing), backing->format, OpenOptions(false));
    if (parent.ok()) {
      Status link = img->CheckParent(*parent.value());
      if (!link.ok()) r->messages.push_back("Warning: " + link.message());
    }
  }
  return r;
}

std::string CheckHuman(const CheckResult& r) {
  std::string o;
  char buf[512];
  if (r.corruptions_fixed || r.leaks_fixed) {
    std::snprintf(buf, sizeof buf,
                  "The following inconsistencies were found and repaired:\n\n"
                  "    %llu leaked clusters\n    %llu corruptions\n\nDouble checking the fixed image now...\n",
                  (unsigned long long)r.leaks_fixed, (unsigned long long)r.corruptions_fixed);
    o += buf;
  }
  if (!r.corruptions && !r.leaks && !r.check_errors) {
    o += "No errors were found on the image.\n";
  } else {
    if (r.corruptions) {
      std::snprintf(buf, sizeof buf,
                    "\n%llu errors were found on the image.\n"
                    "Data may be corrupted, or further writes to the image may corrupt it.\n",
                    (unsigned long long)r.corruptions);
      o += buf;
    }
    if (r.leaks) {
      std::snprintf(buf, sizeof buf,
                    "\n%llu leaked clusters were found on the image.\n"
                    "This means waste of disk space, but no harm to data.\n",
                    (unsigned long long)r.leaks);
      o += buf;
    }
    if (r.check_errors) {
      std::snprintf(buf, sizeof buf, "\n%llu internal errors have occurred during the check.\n",
                    (unsigned long long)r.check_errors);
      o += buf;
    }
  }
  if (r.total_clusters && r.allocated_clusters) {
    // Fragmented and compressed are shares of the allocated clusters.
    const double t = double(r.total_clusters), a = double(r.allocated_clusters);
    std::snprintf(buf, sizeof buf, "%llu/%llu = %0.2f%% allocated, %0.2f%% fragmented, %0.2f%% compressed clusters\n",
                  (unsigned long long)r.allocated_clusters, (unsigned long long)r.total_clusters,
                  r.allocated_clusters * 100.0 / t, r.fragmented_clusters * 100.0 / a,
                  r.compressed_clusters * 100.0 / a);
    o += buf;
  }
  if (r.image_end_offset) o += "Image end offset: " + std::to_string(r.image_end_offset) + "\n";
  return o;
}

std::string CheckJson(const CheckResult& r, const std::string& filename, const std::string& format) {
  // qemu prints its dictionary in the order of its hash buckets; these
  // keys, in that order.
  nlohmann::ordered_json j;
  if (r.image_end_offset) j["image-end-offset"] = r.image_end_offset;
  if (r.compressed_clusters) j["compressed-clusters"] = r.compressed_clusters;
  if (r.cluster_counts) j["total-clusters"] = r.total_clusters;
  if (r.corruptions) j["corruptions"] = r.corruptions;
  if (r.corruptions_fixed) j["corruptions-fixed"] = r.corruptions_fixed;
  j["check-errors"] = r.check_errors;
  if (r.leaks) j["leaks"] = r.leaks;
  if (r.leaks_fixed) j["leaks-fixed"] = r.leaks_fixed;
  if (r.cluster_counts) j["allocated-clusters"] = r.allocated_clusters;
  j["filename"] = filename;
  j["format"] = format;
  if (r.fragmented_clusters) j["fragmented-clusters"] = r.fragmented_clusters;
  return DumpQemuJson(j) + "\n";
}

int CheckExitCode(const Status& failed) { return failed.code() == Code::kUnsupported ? 63 : 1; }

int CheckExitCode(const CheckResult& r) {
  if (r.check_errors) return 1;
  if (r.corruptions) return 2;
  if (r.leaks) return 3;
  return 0;
}

}  // namespace imgfs::ops
