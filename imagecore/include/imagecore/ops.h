// Image operations shared by the imgfs command and the filesystem.
#pragma once

#include <string>
#include <vector>

#include "imagecore/format.h"
#include "imagecore/image.h"
#include "imagecore/status.h"

namespace imgfs::ops {

// ---- create (ops/create.cpp) ----
struct CreateRequest {
  std::string path;
  std::string format;          // "qcow2" or "raw"
  std::string size;            // qemu-img size text; "" = the backing file's
  std::string backing_file;
  std::string backing_format;  // "" = probe the backing file
  std::string options;         // "-o" text: "cluster_size=64k,compat=1.1"
};
// Creates the image in a temporary file beside `path` and renames it into
// place, so a failure never leaves a half-written image.
Status Create(const CreateRequest& req);

// ---- info (ops/info.cpp) ----
struct LayerInfo {
  std::string filename;
  ImageInfo info;
  uint64_t actual_size = 0;
  std::string backing_filename;       // as stored
  std::string full_backing_filename;  // resolved
  std::string backing_format;
};
// One entry, or with `backing_chain` one per layer from the top down.
Result<std::vector<LayerInfo>> CollectInfo(const std::string& path, const std::string& format, bool backing_chain);
// qemu-img's JSON: an object, or an array when `as_chain`.
std::string InfoJson(const std::vector<LayerInfo>& layers, bool as_chain);
std::string InfoHuman(const std::vector<LayerInfo>& layers);

}  // namespace imgfs::ops
