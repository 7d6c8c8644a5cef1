#include "control.h"

#include "guard.h"

#include <cstdio>
#include <sstream>
#include <vector>

#include "imagecore/log.h"
#include "imagecore/ops.h"
#include "imagecore/size.h"
#include "notify.h"
#include "ops.h"
#include "imagecore/mutex.h"

namespace imgfs::fs {

namespace {

std::vector<std::string> Words(const std::string& line) {
  std::istringstream in(line);
  std::vector<std::string> w;
  for (std::string s; in >> s;) w.push_back(s);
  return w;
}

Status Usage(const std::string& line, const char* usage) {
  return InvalidArgument("'" + line + "': usage: " + usage);
}

// The views whose content or size follow the top layer.
void InvalidateDisk(FsContext& ctx, size_t image) {
  InvalidateInode(ctx, InoOf(NodeKind::kDisk, image));
  InvalidateInode(ctx, InoOf(NodeKind::kLayer, image, 0));
}

// Snapshot views are numbered by their place in the table, so after a
// change every name and every number may mean another snapshot.
void InvalidateSnapshots(FsContext& ctx, size_t image, const std::vector<std::string>& old_names) {
  ctx.ns.ForgetSnapshots(image);
  const uint64_t dir = InoOf(NodeKind::kSnapshotsDir, image);
  for (size_t k = 0; k < old_names.size(); ++k) {
    InvalidateEntry(ctx, dir, old_names[k]);
    InvalidateInode(ctx, InoOf(NodeKind::kSnapshot, image, k));
  }
  InvalidateInode(ctx, dir);
}

std::vector<std::string> SnapshotNames(FsContext& ctx, size_t image) {
  auto snaps = ctx.ns.Snapshots(image);
  return snaps.ok() ? ops::SnapshotFileNames(snaps.value()) : std::vector<std::string>{};
}

}  // namespace

Result<Command> ParseCtlLine(const std::string& line) {
  const std::vector<std::string> w = Words(line);
  Command c;
  c.text = line;
  if (w.empty()) return InvalidArgument("empty command");
  for (unsigned char ch : line)
    if (ch < 0x20 && ch != '\t' && ch != '\r') return InvalidArgument("a command holds a control character");
  if (w[0] == "resize") {
    if (w.size() < 2 || w.size() > 3 || (w.size() == 3 && w[2] != "--shrink"))
      return Usage(line, "resize SIZE|+SIZE|-SIZE [--shrink]");
    c.kind = Command::kResize;
    c.arg = w[1];
    c.shrink = w.size() == 3;
  } else if (w[0] == "snapshot") {
    if (w.size() != 3) return Usage(line, "snapshot create|delete|apply NAME");
    if (w[1] == "create") c.kind = Command::kSnapshotCreate;
    else if (w[1] == "delete") c.kind = Command::kSnapshotDelete;
    else if (w[1] == "apply") c.kind = Command::kSnapshotApply;
    else return Usage(line, "snapshot create|delete|apply NAME");
    c.arg = w[2];
  } else if (w[0] == "commit") {
    c.kind = Command::kCommit;
    for (size_t i = 1; i < w.size(); ++i) {
      if (w[i] == "--drop") c.drop = true;
      else if (w[i] == "--base" && i + 1 < w.size()) c.arg = w[++i];
      else if (w[i] == "--rate" && i + 1 < w.size()) {
        auto rate = ParseSize(w[++i]);
        if (!rate.ok() || rate.value() == 0) return InvalidArgument("commit --rate: '" + w[i] + "' is not a rate in bytes per second");
        c.rate = rate.value();
      } else return Usage(line, "commit [--base LAYER] [--drop] [--rate BYTES/S]");
    }
  } else if (w[0] == "check") {
    c.kind = Command::kCheck;
    if (w.size() == 3 && w[1] == "--repair" && (w[2] == "leaks" || w[2] == "all"))
      c.repair = w[2] == "all" ? RepairMode::kAll : RepairMode::kLeaks;
    else if (w.size() != 1)
      return Usage(line, "check [--repair leaks|all]");
  } else if (w[0] == "flush") {
    if (w.size() != 1) return Usage(line, "flush");
    c.kind = Command::kFlush;
  } else if (w[0] == "unlock") {
    if (w.size() != 2 || w[1].empty() || w[1][0] != '/') return Usage(line, "unlock /ABSOLUTE/PATH/OF/KEY/FILE");
    c.kind = Command::kUnlock;
    c.arg = w[1];
  } else if (w[0] == "lock") {
    if (w.size() != 1) return Usage(line, "lock");
    c.kind = Command::kLock;
  } else {
    return InvalidArgument("unknown command '" + w[0] + "' (resize, snapshot, commit, check, flush, unlock, lock)");
  }
  return c;
}

Result<Command> ParseControlAttribute(const std::string& name, const std::string& value) {
  Command c;
  c.text = name + "=" + value;
  c.arg = value;
  if (name == "user.imgfs.resize") {
    c.kind = Command::kResize;
    const auto comma = value.find(',');
    if (comma != std::string::npos) {
      if (value.substr(comma + 1) != "shrink") return InvalidArgument("'" + value + "': expected SIZE[,shrink]");
      c.arg = value.substr(0, comma);
      c.shrink = true;
    }
  } else if (name == "user.imgfs.snapshot.create") {
    c.kind = Command::kSnapshotCreate;
  } else if (name == "user.imgfs.snapshot.delete") {
    c.kind = Command::kSnapshotDelete;
  } else if (name == "user.imgfs.snapshot.apply") {
    c.kind = Command::kSnapshotApply;
  } else if (name == "user.imgfs.commit") {
    c.kind = Command::kCommit;
  } else {
    return NotFound(name + " is not a control attribute");
  }
  if (c.kind != Command::kCommit && c.arg.empty()) return InvalidArgument(name + " needs a value");
  return c;
}

std::string Control::State() const {
  MutexLock l(mu_);
  std::string out = "last: " + (last_.empty() ? std::string("none") : last_) + "\n";
  out += "current: " + (busy_ ? "running: " + running_ : std::string("idle")) + "\n";
  return out;
}

std::string Control::Summary() const {
  MutexLock l(mu_);
  return busy_ ? "running: " + running_ : last_;
}

void Control::Join() {
  std::thread t;
  {
    MutexLock l(mu_);
    t = std::move(worker_);
  }
  if (t.joinable()) t.join();
}

namespace {
// What ctl and the log show of a request: a name of 70,000 characters
// is cut, and a control character spelled out, so that a line can
// neither hide a byte nor start a line of its own.
std::string Clip(const std::string& raw) {
  std::string text;
  for (unsigned char ch : raw) {
    if (ch >= 0x20 && ch != 0x7f) {
      text += static_cast<char>(ch);
    } else {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", ch);
      text += esc;
    }
  }
  constexpr size_t kMax = 160;
  if (text.size() <= kMax) return text;
  return text.substr(0, kMax) + "... (" + std::to_string(text.size()) + " bytes)";
}
}  // namespace

void Control::Finish(const Command& cmd, const Status& st, const std::string& detail) {
  MutexLock l(mu_);
  last_ = Clip(cmd.text) + ": " + (st.ok() ? "ok" + detail : "error: " + Clip(st.message()));
  busy_ = false;
  running_.clear();
}

void Control::Refused(const std::string& text, const Status& st) {
  MutexLock l(mu_);
  last_ = Clip(text) + ": error: " + Clip(st.message());
}

Status Control::Run(FsContext& ctx, size_t image, const Command& cmd) {
  std::unique_lock<std::mutex> run(run_mu_, std::try_to_lock);
  if (!run.owns_lock()) return Busy("busy: another control command is running on this image");
  {
    MutexLock l(mu_);
    if (busy_) return Busy("busy: " + running_ + " is running on this image");
  }
  Join();  // a finished background command
  ImageEntry& e = ctx.ns.image(image);
  Status st;
  const bool writes = cmd.kind != Command::kFlush && cmd.kind != Command::kUnlock && cmd.kind != Command::kLock &&
                      !(cmd.kind == Command::kCheck && cmd.repair == RepairMode::kNone);
  if (writes) st = ctx.ns.ClaimForWrite(image);  // ReadOnly, or Busy naming a VM that has it
  if (!st.ok()) {
  } else if (cmd.kind == Command::kCommit) {
    st = StartCommit(ctx, image, cmd);
    if (st.ok()) return st;  // it reports when it ends
  } else if (cmd.kind == Command::kCheck) {
    st = StartCheck(ctx, image, cmd);
    if (st.ok()) return st;
  } else if (cmd.kind == Command::kUnlock || cmd.kind == Command::kLock) {
    st = cmd.kind == Command::kLock ? ctx.ns.Lock(image)
         : cmd.key                  ? ctx.ns.Unlock(image, SecretBytes(cmd.key->data(), cmd.key->size()))
                                    : InvalidArgument("unlock: no key was read");
    InvalidateDisk(ctx, image);
  } else {
    auto chain = ctx.ns.GetChain(image);
    if (!chain.ok()) {
      st = chain.status();
    } else if (cmd.kind == Command::kFlush) {
      st = chain.value()->Flush();
    } else if (cmd.kind == Command::kResize) {
      st = ctx.ns.Resize(image, *chain.value(), cmd.arg, cmd.shrink).status();
      InvalidateDisk(ctx, image);
    } else if (cmd.kind == Command::kSnapshotCreate && cmd.arg.find('\n') != std::string::npos) {
      st = InvalidArgument("a snapshot name may not hold a newline (user.imgfs.snapshots lists one per line)");
    } else {
      const std::vector<std::string> old_names = SnapshotNames(ctx, image);
      const ops::SnapshotAction action = cmd.kind == Command::kSnapshotCreate   ? ops::SnapshotAction::kCreate
                                         : cmd.kind == Command::kSnapshotDelete ? ops::SnapshotAction::kDelete
                                                                                : ops::SnapshotAction::kApply;
      st = ops::ChangeSnapshot(*chain.value(), action, cmd.arg);
      InvalidateSnapshots(ctx, image, old_names);
      if (action == ops::SnapshotAction::kApply) {
        e.virtual_size = chain.value()->VirtualSize();
        InvalidateDisk(ctx, image);
      }
    }
  }
  if (!st.ok()) Log(LogLevel::kWarning, e.name + ": " + Clip(cmd.text) + ": " + Clip(st.message()));
  Finish(cmd, st, "");
  return st;
}

Status Control::StartCommit(FsContext& ctx, size_t image, const Command& cmd) {
  IMGFS_ASSIGN_OR_RETURN(auto chain, ctx.ns.GetChain(image));
  IMGFS_ASSIGN_OR_RETURN(size_t base, ops::FindLayer(*chain, cmd.arg));
  const std::string base_path = io::RealPath(chain->layer_path(base));
  // Another overlay on the base would see its disk change under it.
  for (size_t j : ctx.ns.BackingUsers(base_path, image))
    return Busy(chain->layer_path(base) + " is also the backing file of " + ctx.ns.image(j).name);
  {
    MutexLock l(mu_);
    busy_ = true;
    running_ = "commit 0% (counting what to copy)";
  }
  RunInBackground(cmd, [this, &ctx, image, cmd, chain, base_path] {
    Status st = ops::Commit(*chain, cmd.arg, cmd.drop, [this](uint64_t done, uint64_t total) {
      char buf[128];
      std::snprintf(buf, sizeof buf, "commit %d%% (%s of %s)", total ? int(done * 100 / total) : 100,
                    HumanSize(done).c_str(), HumanSize(total).c_str());
      MutexLock l(mu_);
      running_ = buf;
    }, cmd.rate);
    // The layers below the top changed; the top reads as before.
    for (size_t d = 1; d < chain->depth() && d < kMaxLayers; ++d) InvalidateInode(ctx, InoOf(NodeKind::kLayer, image, d));
    // So did the base's own views if it is in the mount.
    for (size_t j : ctx.ns.ImagesAt(base_path)) {
      ctx.ns.Reopen(j);
      InvalidateDisk(ctx, j);
      for (size_t d = 1; d < kMaxLayers && d < ctx.ns.image(j).layer_paths.size(); ++d)
        InvalidateInode(ctx, InoOf(NodeKind::kLayer, j, d));
    }
    if (!st.ok()) Log(LogLevel::kWarning, ctx.ns.image(image).name + ": " + Clip(cmd.text) + ": " + Clip(st.message()));
    Finish(cmd, st, "");
  });
  return Status::OK();
}

void Control::RunInBackground(const Command& cmd, std::function<void()> body) {
  std::thread t([this, cmd, body] {
    bool finished = false;
    RunGuarded(cmd.text, [&] {
      body();
      finished = true;
    });
    if (!finished) Finish(cmd, Status(Code::kIoError, "internal error (the log says which)"), "");
  });
  MutexLock l(mu_);  // Join (at unmount) may look at it from another thread
  worker_ = std::move(t);
}

Status Control::StartCheck(FsContext& ctx, size_t image, const Command& cmd) {
  IMGFS_ASSIGN_OR_RETURN(auto chain, ctx.ns.GetChain(image));
  {
    MutexLock l(mu_);
    busy_ = true;
    running_ = "check";
  }
  RunInBackground(cmd, [this, cmd, chain] {
    auto r = chain->Check(cmd.repair);
    Status st = r.status();
    std::string detail;
    if (r.ok()) {
      const CheckResult& c = r.value();
      if (c.corruptions || c.leaks || c.check_errors) {
        st = Corrupt(std::to_string(c.corruptions) + " errors, " + std::to_string(c.leaks) + " leaked clusters" +
                     (c.corruptions_fixed || c.leaks_fixed
                          ? " (" + std::to_string(c.corruptions_fixed + c.leaks_fixed) + " fixed)"
                          : std::string()));
      } else {
        detail = c.corruptions_fixed || c.leaks_fixed
                     ? " (" + std::to_string(c.corruptions_fixed) + " errors and " + std::to_string(c.leaks_fixed) +
                           " leaks repaired)"
                     : " (no errors)";
      }
    }
    Finish(cmd, st, detail);
  });
  return Status::OK();
}

}  // namespace imgfs::fs
