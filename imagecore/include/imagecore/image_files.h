// The files one image is made of: its image file and the files it names
// (extents, a data file). One answer, for a mount and the tools alike, to
// what a change to a file changes, what an image costs on disk, and whether
// someone else wrote it meanwhile.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "imagecore/image.h"
#include "imagecore/named_files.h"

namespace imgfs {

class ImageFiles {
 public:
  struct Member {
    std::string path;  // resolved, links followed
    FileRole role = FileRole::kExtent;
  };

  ImageFiles() = default;
  // The files of the image at `path` as its header names them, without
  // opening its chain (cheap enough for every file of a directory). Empty
  // for a file that is no image. Only files of the image file's owner
  // count (any, for root's images): another user's descriptor cannot hide
  // someone's image by naming it.
  static ImageFiles FromHeader(const std::string& path, const FileOpener& files, const io::Access& as);
  // The files of `img`, open from `path`.
  static ImageFiles FromImage(const Image& img, const std::string& path, const FileOpener& files);

  // The image file, resolved ("" for an empty set).
  const std::string& path() const { return path_; }
  // Every file but the image file.
  const std::vector<Member>& members() const { return members_; }
  bool HasMember(const std::string& real_path) const;
  // The size and modification time of every file, as one string: if it
  // differs from an earlier one, a file was written meanwhile.
  std::string Stamp(const FileOpener& files) const;
  // Bytes the files hold on disk, every file but the image file.
  uint64_t MemberBytes(const FileOpener& files) const;

 private:
  std::string path_;
  std::vector<Member> members_;
};

}  // namespace imgfs
