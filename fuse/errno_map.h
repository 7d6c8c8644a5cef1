// The one place where imagecore's Status becomes an errno.
#pragma once
#include "imagecore/status.h"
namespace imgfs::fs {
int ErrnoOf(const Status& st);
}
