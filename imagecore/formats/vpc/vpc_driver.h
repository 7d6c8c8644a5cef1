#pragma once
#include "imagecore/format.h"
namespace imgfs::vpc {
extern const FormatDriver kDriver;
}
