#pragma once
#include "imagecore/format.h"
namespace imgfs::qcow2 {
extern const FormatDriver kDriver;
// Writes a new qcow2 image into an empty file (qcow2_create.cpp).
Status CreateImage(io::File& file, const CreateOptions& opts);
}  // namespace imgfs::qcow2
