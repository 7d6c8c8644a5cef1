#include "errno_map.h"

#include <cerrno>

namespace imgfs::fs {

int ErrnoOf(const Status& st) {
  switch (st.code()) {
    case Code::kOk: return 0;
    case Code::kNotFound: return ENOENT;
    case Code::kInvalidArgument: return EINVAL;
    case Code::kCorrupt: return EIO;
    case Code::kUnsupported: return EOPNOTSUPP;
    case Code::kIoError: return st.sys_errno() ? st.sys_errno() : EIO;
    case Code::kReadOnly: return EROFS;
    case Code::kBusy: return EBUSY;
    case Code::kNoSpace: return ENOSPC;
    case Code::kNoKey: return EACCES;
  }
  return EIO;
}

}  // namespace imgfs::fs

namespace imgfs::fs {

int ControlErrnoOf(const Status& st) {
  if (st.code() == Code::kNotFound) return EINVAL;
  return ErrnoOf(st);
}

}  // namespace imgfs::fs
