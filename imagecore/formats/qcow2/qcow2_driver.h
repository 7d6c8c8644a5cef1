#pragma once
#include "imagecore/format.h"
namespace imgfs::qcow2 {
extern const FormatDriver kDriver;
// Writes a new qcow2 image into an empty file (qcow2_create.cpp).
Status CreateImage(io::File& file, const CreateOptions& opts);
// The same, and an external data file (-o data_file=) beside it.
Status CreateFiles(NewFiles& files, const CreateOptions& opts);
struct Header;
// The header fields and cluster size that create's -o options ask for.
Status ParseCreateOptions(const CreateOptions& opts, Header* h, uint64_t* cluster_size, Prealloc* prealloc = nullptr);
// qemu-img measure for qcow2 output (qcow2_measure.cpp).
Result<MeasureResult> Measure(const CreateOptions& opts, const MeasureInput& in);
}  // namespace imgfs::qcow2
