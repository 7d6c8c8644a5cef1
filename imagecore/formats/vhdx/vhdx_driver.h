#pragma once
#include "imagecore/format.h"
namespace imgfs::vhdx {
extern const FormatDriver kDriver;
}
