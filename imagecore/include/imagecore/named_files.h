// The files an image names: backing files, external data files, extents.
//
// One resolver turns every stored name into a path, and one opener opens
// it, so that names mean the same to every driver and to the chain, a
// writable open always takes QEMU's locks, and unit tests can hand a driver
// in-memory files instead of the host's.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "imagecore/access.h"
#include "imagecore/file.h"
#include "imagecore/status.h"

namespace imgfs {

// What a file is to the image that opened it.
enum class FileRole { kImage, kDescriptor, kExtent, kDataFile };
const char* FileRoleName(FileRole role);

// A file that an image names, as stored in it, and what it is to it.
struct NamedFile {
  std::string name;
  FileRole role = FileRole::kExtent;
};

// Where a name stored in the file at `naming_path` points: absolute names
// and protocol names ("nbd://", "json:") as they are, others against the
// directory of `naming_path`.
std::string ResolveNamedPath(const std::string& naming_path, const std::string& name);

// A fresh temporary name beside `path` for a file being made, and whether
// a file name is one (a mount lists none: each is a file half made, or
// left by a crash).
std::string TempNameFor(const std::string& path);
bool IsTempName(const std::string& name);

// Opens and creates files by path. The host's is the default; tests pass
// their own. Thread-safe.
class FileOpener {
 public:
  virtual ~FileOpener() = default;
  virtual Result<std::unique_ptr<io::File>> Open(const std::string& path, bool writable,
                                                 const io::Access& as) const = 0;
  // A new file (it must not exist), for writing, made with `as`'s rights
  // (so owned by that user, where the directory lets them) and `mode`.
  virtual Result<std::unique_ptr<io::File>> Create(const std::string& path, const io::Access& as,
                                                   mode_t mode) const = 0;
  virtual bool Exists(const std::string& path) const = 0;
  virtual Status Rename(const std::string& from, const std::string& to) const = 0;
  virtual void Remove(const std::string& path) const = 0;
  // A new file with no name yet beside `path`, where files can be made so
  // (Unsupported otherwise); Name gives it one. A crash leaves nothing.
  virtual Result<std::unique_ptr<io::File>> CreateUnnamed(const std::string& path, mode_t mode) const {
    return Unsupported(path + ": no unnamed files");
  }
  virtual Status Name(const io::File& file, const std::string& path) const { return Unsupported(path); }
  // Opens `file`, made by CreateUnnamed, again, under its future name.
  virtual Result<std::unique_ptr<io::File>> Reopen(const io::File& file, bool writable) const {
    return Unsupported(file.path() + ": cannot be opened again");
  }
  // Names in the directory `dir`, sorted (none if it cannot be read).
  virtual std::vector<std::string> List(const std::string& dir) const { return {}; }
  // What the file system says of `path`, links followed.
  virtual Result<io::FileStat> Stat(const std::string& path) const { return NotFound(path); }
  // `path` with links and dots resolved; as it is where there are none.
  virtual std::string RealPath(const std::string& path) const { return path; }
  // The rights the image at `path`, and every file it names, is opened
  // with (see imagecore/access.h).
  virtual io::ImageAccess AccessFor(const std::string& path) const { return io::ImageAccess(); }
};
const FileOpener& HostFiles();

// The files one create writes: each without a name where the file system
// allows it (else under a temporary name beside its final one), all
// synced and named by Commit (the main file last, so that it never names
// a file that is not there yet). Until Commit succeeds, destroying it
// removes every one of them; temporary names that a killed run left
// beside the output are removed by the next one.
class NewFiles {
 public:
  NewFiles(const FileOpener& opener, std::string main_path);
  ~NewFiles();
  NewFiles(const NewFiles&) = delete;
  NewFiles& operator=(const NewFiles&) = delete;

  const std::string& main_path() const { return main_path_; }
  // The main file (created on first use).
  Result<io::File*> Main();
  // Another file, `name` as the main file will store it (resolved beside it).
  Result<io::File*> Add(const std::string& name);
  // Opens files by their final paths while they still have temporary
  // names (to write into an image being made); other paths as `opener`.
  const FileOpener& Staged() const { return staged_; }
  Status Commit();

 private:
  class StagedOpener final : public FileOpener {
   public:
    explicit StagedOpener(const NewFiles* owner) : owner_(owner) {}
    Result<std::unique_ptr<io::File>> Open(const std::string& path, bool writable,
                                           const io::Access& as) const override;
    Result<std::unique_ptr<io::File>> Create(const std::string& path, const io::Access& as,
                                             mode_t mode) const override {
      return owner_->opener_.Create(path, as, mode);
    }
    bool Exists(const std::string& path) const override;
    Status Rename(const std::string& from, const std::string& to) const override {
      return owner_->opener_.Rename(from, to);
    }
    void Remove(const std::string& path) const override { owner_->opener_.Remove(path); }

   private:
    const NewFiles* owner_;
  };
  // The temporary path of a pending file, or `path` itself.
  std::string StagedPath(const std::string& path) const;

  struct Pending {
    std::string final_path, temp_path;  // temp_path: "" while unnamed
    std::unique_ptr<io::File> file;
    bool unnamed = false;
  };
  Status NameTemporarily(Pending& p);
  void RemoveLeftovers(const std::string& final_path) const;
  Result<io::File*> Create(const std::string& final_path);

  const FileOpener& opener_;
  const std::string main_path_;
  std::vector<Pending> files_;  // main first, once made
  bool committed_ = false;
  StagedOpener staged_{this};
};

}  // namespace imgfs
