// The one place where imagecore's Status becomes an errno.
#pragma once
#include "imagecore/status.h"
namespace imgfs::fs {
int ErrnoOf(const Status& st);
// For a control command (a ctl line, a control attribute): what names a
// thing that is not there ("no such snapshot") is a bad value, EINVAL; a
// missing file would read as "disk.raw: No such file or directory".
int ControlErrnoOf(const Status& st);
}  // namespace imgfs::fs
