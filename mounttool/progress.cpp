#include "progress.h"

#include <cstdio>

namespace imgfs::cli {

Chain::Progress ProgressPrinter(bool show) {
  if (!show) return {};
  return [](uint64_t done, uint64_t total) {
    std::printf("    (%.2f/100%%)\r", total ? 100.0 * double(done) / double(total) : 100.0);
    std::fflush(stdout);
  };
}

void FinishProgress(bool show) {
  if (show) std::printf("    (100.00/100%%)\n");
}

}  // namespace imgfs::cli
