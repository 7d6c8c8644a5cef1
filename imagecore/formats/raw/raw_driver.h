#pragma once
#include "imagecore/format.h"
namespace imgfs::raw {
extern const FormatDriver kDriver;
}
