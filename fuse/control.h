// Control of a mounted image: the commands of its ctl file and the
// user.imgfs.* attributes. Each runs one image-core operation (the same
// the CLI runs), then tells the kernel which views changed.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "imagecore/image.h"
#include "imagecore/secret.h"
#include "imagecore/status.h"
#include "imagecore/mutex.h"

namespace imgfs::fs {

struct FsContext;

struct Command {
  enum Kind { kResize, kSnapshotCreate, kSnapshotDelete, kSnapshotApply, kCommit, kCheck, kFlush, kUnlock, kLock } kind =
      kFlush;
  std::string arg;        // resize: the size; snapshot: the name; commit: the base ("" = backing file)
  bool shrink = false;    // resize
  bool drop = false;      // commit: keep the top as it is
  uint64_t rate = 0;      // commit: bytes per second, 0 = no limit
  RepairMode repair = RepairMode::kNone;  // check
  std::string text;       // the command as the user gave it, for the state
  // unlock: the key, read from the file `arg` with the rights of whoever
  // wrote the line (WriteCtl) before the command runs.
  std::shared_ptr<const SecretBytes> key;
};

// One line written to ctl: "resize SIZE|+SIZE|-SIZE [--shrink]",
// "snapshot create|delete|apply NAME", "commit [--base LAYER] [--drop] [--rate BYTES/S]",
// "check [--repair leaks|all]", "flush", "unlock /KEY/FILE", "lock".
Result<Command> ParseCtlLine(const std::string& line);
// A write of a control attribute (user.imgfs.resize, .snapshot.create,
// .snapshot.delete, .snapshot.apply, .commit). NotFound: not one of them.
Result<Command> ParseControlAttribute(const std::string& name, const std::string& value);

// The control state of one image. Thread-safe.
class Control {
 public:
  ~Control() { Join(); }
  // Runs `cmd` on image `image`. Quick commands run now and return their
  // result; commit and check start in the background and return OK once
  // started. Anything asked while one runs gets Busy.
  Status Run(FsContext& ctx, size_t image, const Command& cmd);
  // What reading ctl shows: the last command's outcome and the current one.
  std::string State() const;
  // One line: "running: ..." while a command runs, else the last outcome.
  std::string Summary() const;
  // Waits for a command running in the background.
  void Join();
  // Records a request refused before it could run (bad syntax or value, a
  // read-only mount) as the last outcome, so that ctl tells why.
  void Refused(const std::string& text, const Status& st);

 private:
  void Finish(const Command& cmd, const Status& st, const std::string& detail);
  Status StartCommit(FsContext& ctx, size_t image, const Command& cmd);
  Status StartCheck(FsContext& ctx, size_t image, const Command& cmd);
  // Runs `body` (which ends with Finish) on worker_; an exception ends the
  // command with an error instead of the daemon.
  void RunInBackground(const Command& cmd, std::function<void()> body);

  std::mutex run_mu_;      // one Run at a time per image (a second one gets Busy)
  mutable Mutex mu_;
  std::string last_ GUARDED_BY(mu_);     // "resize +1G: ok", "commit: error: <reason>"
  std::string running_ GUARDED_BY(mu_);  // "" or "commit 37% (1.2 GiB of 3.2 GiB)"
  bool busy_ GUARDED_BY(mu_) = false;
  std::thread worker_ GUARDED_BY(mu_);   // the background command, joined before the next
};

}  // namespace imgfs::fs
