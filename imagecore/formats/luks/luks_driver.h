#pragma once
#include "imagecore/format.h"
namespace imgfs::luks {
extern const FormatDriver kDriver;
}
