// Chain: an image and its backing files, opened top to bottom, read as one
// disk. Depth 0 is the image itself, depth 1 its backing file, and so on;
// every layer can also be read "from depth d down" (the layer views).
//
// Thread safety: all methods may be called concurrently; the layers guard
// their own state. The chain itself is immutable after Open.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "imagecore/image.h"
#include "imagecore/status.h"

namespace imgfs {

// One run of guest bytes as the chain resolves it.
struct Resolved {
  enum Kind { kData, kZero, kOpaque } kind = kZero;
  uint64_t length = 0;
  const io::File* file = nullptr;  // kData: read `length` bytes at host_offset
  uint64_t host_offset = 0;
  size_t depth = 0;                // kData/kOpaque: the layer that holds it
};

class Chain {
 public:
  // Opens `path` (format "" = probe) writable or not, and its backing chain
  // read-only. Relative backing names resolve against the directory of the
  // image that names them; a stored backing format is used, never probed.
  static Result<std::unique_ptr<Chain>> Open(const std::string& path, const std::string& format, bool writable);
  // The same, read-only, with internal snapshot `snapshot_id` of the image
  // as the top layer (its backing chain is the image's).
  static Result<std::unique_ptr<Chain>> OpenSnapshot(const std::string& path, const std::string& format,
                                                     const std::string& snapshot_id);
  ~Chain();

  size_t depth() const { return layers_.size(); }
  Image& layer(size_t d) const { return *layers_[d]; }
  const std::string& layer_path(size_t d) const { return paths_[d]; }
  uint64_t VirtualSize(size_t d = 0) const { return layers_[d]->VirtualSize(); }

  // The run at `off` of the disk seen from layer `d` down. REQUIRES: off <
  // VirtualSize(d). Bytes below every layer (or past a smaller backing
  // file) are kZero.
  Status Resolve(size_t d, uint64_t off, uint64_t len, Resolved* out) const;
  // Reads the disk as seen from layer `d` down; past its end reads zeros.
  Status Read(size_t d, uint64_t off, void* buf, size_t len) const;
  // Reads one resolved run into buf (kData, kZero or kOpaque).
  Status ReadResolved(const Resolved& r, uint64_t off, void* buf) const;

  Status Write(uint64_t off, const void* buf, size_t len);
  Status Flush();

 private:
  class Below;
  Chain() = default;
  static Result<std::unique_ptr<Chain>> OpenImpl(const std::string& path, const std::string& format, bool writable,
                                                 const std::string& snapshot_id);
  std::vector<std::unique_ptr<Image>> layers_;
  std::vector<std::string> paths_;
  std::vector<std::unique_ptr<Below>> below_;  // below_[d] reads from depth d+1 down
};

// Where a backing name stored in the image at `image_path` points.
std::string ResolveBackingPath(const std::string& image_path, const std::string& backing_name);

}  // namespace imgfs
