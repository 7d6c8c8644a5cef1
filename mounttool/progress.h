// Progress of long subcommands (-p, --progress=json), on standard output
// as qemu-img prints it.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "imagecore/chain.h"

namespace imgfs::cli {

struct ProgressArgs {
  bool show = false;  // -p
  std::string mode;   // --progress: "json"
};
// Registers -p and --progress=json on `app`.
void AddProgressArgs(CLI::App& app, ProgressArgs* p);

// SIGUSR1 asks for the progress from now on, in every subcommand, instead
// of ending the process.
void CatchUsr1();
// The callback for a subcommand (without -p or --progress, or with
// `quiet`, it prints only when SIGUSR1 asks). On a terminal: "    (N.NN/100%) DONE of TOTAL, RATE/s,
// M:SS left", redrawn in place; elsewhere "    (N.00/100%)" lines at each
// whole percent; with --progress=json one object per update:
// {"done": N, "total": N, "percent": P, "rate": BYTES_PER_S, "eta": SECONDS}.
// SIGUSR1 prints the progress at once, as qemu-img does.
Chain::Progress ProgressPrinter(const ProgressArgs& p, bool quiet);
// Ends the progress output after success.
void FinishProgress(const ProgressArgs& p, bool quiet);

}  // namespace imgfs::cli
