// The process's image keys, by (device, inode).
#include "imagecore/keyring.h"

#include <sys/stat.h>

#include <atomic>
#include <cerrno>
#include <map>
#include <utility>

#include "imagecore/mutex.h"

namespace imgfs {
namespace {

using FileId = std::pair<uint64_t, uint64_t>;

struct Ring {
  Mutex mu;
  std::map<FileId, std::shared_ptr<const SecretBytes>> keys GUARDED_BY(mu);
  std::atomic<uint64_t> generation{0};
};

Ring& TheRing() {
  static Ring* ring = new Ring();  // never destroyed: worker threads may look up keys at exit
  return *ring;
}

}  // namespace

Status AddImageKey(const std::string& path, SecretBytes key) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) return IoError("stat " + path, errno);
  io::FileStat fs;
  fs.dev = st.st_dev;
  fs.ino = st.st_ino;
  AddImageKey(fs, std::move(key));
  return Status::OK();
}

void AddImageKey(const io::FileStat& file, SecretBytes key) {
  Ring& r = TheRing();
  MutexLock l(r.mu);
  r.keys[{uint64_t(file.dev), uint64_t(file.ino)}] = std::make_shared<const SecretBytes>(std::move(key));
  ++r.generation;
}

std::shared_ptr<const SecretBytes> ImageKey(const io::File& file) {
  auto st = file.Stat();
  return st.ok() ? ImageKey(st.value()) : nullptr;
}

std::shared_ptr<const SecretBytes> ImageKey(const io::FileStat& file) {
  Ring& r = TheRing();
  MutexLock l(r.mu);
  auto it = r.keys.find({uint64_t(file.dev), uint64_t(file.ino)});
  return it == r.keys.end() ? nullptr : it->second;
}

uint64_t KeyringGeneration() { return TheRing().generation.load(); }

void ForgetImageKey(const io::FileStat& file) {
  Ring& r = TheRing();
  MutexLock l(r.mu);
  r.keys.erase({uint64_t(file.dev), uint64_t(file.ino)});
  ++r.generation;
}

}  // namespace imgfs
