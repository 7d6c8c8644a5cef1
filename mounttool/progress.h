// qemu-img's -p progress line, on standard output.
#pragma once

#include "imagecore/chain.h"

namespace imgfs::cli {

// A progress callback printing "    (N.NN/100%)\r" as qemu-img does, or an
// empty one when not `show`. FinishProgress ends the line.
Chain::Progress ProgressPrinter(bool show);
void FinishProgress(bool show);

}  // namespace imgfs::cli
