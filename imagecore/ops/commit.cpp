// Committing an overlay into its backing file: the one operation behind
// `imgfs commit`, the user.imgfs.commit attribute and the ctl line.
#include <algorithm>
#include <cctype>
#include <chrono>
#include <thread>

#include "imagecore/chain.h"
#include "imagecore/file.h"
#include "imagecore/ops.h"

namespace imgfs::ops {

namespace {
std::string BaseName(const std::string& path) {
  auto s = path.find_last_of('/');
  return s == std::string::npos ? path : path.substr(s + 1);
}
}  // namespace

Result<size_t> FindLayer(const Chain& chain, const std::string& spec) {
  if (spec.empty()) {
    if (chain.depth() < 2) return InvalidArgument(chain.layer_path(0) + ": the image has no backing file");
    return size_t{1};
  }
  if (std::all_of(spec.begin(), spec.end(), [](unsigned char c) { return std::isdigit(c); })) {
    const size_t d = std::stoul(spec);
    if (d == 0 || d >= chain.depth())
      return InvalidArgument("no backing layer at depth " + spec + " (the chain has " +
                             std::to_string(chain.depth()) + " layers)");
    return d;
  }
  const std::string real = io::RealPath(spec);
  for (size_t d = 1; d < chain.depth(); ++d) {
    const std::string& p = chain.layer_path(d);
    const std::string name = BaseName(p);
    if (p == spec || name == spec || io::RealPath(p) == real || std::to_string(d) + "-" + name + ".raw" == spec)
      return d;
  }
  return InvalidArgument("'" + spec + "' is not in the backing chain of " + chain.layer_path(0));
}

Status Commit(Chain& chain, const std::string& base, bool drop, const Chain::Progress& progress, uint64_t rate) {
  IMGFS_ASSIGN_OR_RETURN(size_t d, FindLayer(chain, base));
  Chain::Progress report = progress;
  if (rate) {
    // Progress comes after each copied chunk: sleeping there until the
    // bytes copied so far were due keeps the copy at `rate`.
    const auto start = std::chrono::steady_clock::now();
    report = [progress, rate, start](uint64_t done, uint64_t total) {
      const auto due = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
          std::chrono::duration<double>(static_cast<double>(done) / rate));
      // In steps, so that a request for progress (SIGUSR1) is answered.
      while (std::chrono::steady_clock::now() < due) {
        std::this_thread::sleep_until(std::min(due, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)));
        if (progress) progress(done, total);
      }
      if (progress) progress(done, total);
    };
  }
  // Emptying the top is right only when nothing lies between it and the
  // base: an intermediate layer would otherwise shadow what was committed.
  return chain.Commit(d, !drop && d == 1, report);
}

Status CommitFile(const std::string& path, const std::string& format, const std::string& base, bool drop,
                  const Chain::Progress& progress, uint64_t rate) {
  IMGFS_ASSIGN_OR_RETURN(auto chain, Chain::Open(path, format, true));
  if (chain->layer(0).read_only()) return ReadOnly(path + ": " + chain->layer(0).read_only_reason());
  IMGFS_RETURN_IF_ERROR(Commit(*chain, base, drop, progress, rate));
  return chain->Flush();
}

}  // namespace imgfs::ops
