#pragma once
#include "imagecore/format.h"
namespace imgfs::luks {
Status CreateLuks(io::File& file, const CreateOptions& opts);
Result<MeasureResult> MeasureLuks(const CreateOptions& opts, const MeasureInput& in);
}  // namespace imgfs::luks
