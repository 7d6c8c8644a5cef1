#include "ops/convert_copy.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <thread>

#include <sys/mman.h>
#include <unistd.h>

#include "imagecore/log.h"
#include "imagecore/mutex.h"

namespace imgfs::ops {
namespace {

constexpr uint64_t kChunk = 2 << 20;  // the most one worker reads at a time

bool IsZero(const uint8_t* p, size_t n) { return n == 0 || (p[0] == 0 && std::memcmp(p, p + 1, n - 1) == 0); }

// One run of the target to fill: from one source, with the source's (and,
// over a backing chain, the backing chain's) view of it.
struct Piece {
  uint64_t seq = 0;
  size_t src = 0;
  uint64_t off = 0, len = 0;  // in the target
  Resolved run;               // the source's
  Resolved back;              // the target's backing chain's (target_backed)
};

// A source run's host bytes mapped rather than copied: one copy fewer on
// the way to the target. Only within the file's current size.
class Mapping {
 public:
  ~Mapping() { Reset(); }
  const uint8_t* Map(const io::File& f, uint64_t off, uint64_t len) {
    Reset();
    static const uint64_t page = static_cast<uint64_t>(::sysconf(_SC_PAGESIZE));
    if (f.fd() < 0 || len == 0 || off > f.Size() || len > f.Size() - off) return nullptr;
    const uint64_t start = off / page * page;
    len_ = off + len - start;
    void* p = ::mmap(nullptr, len_, PROT_READ, MAP_SHARED | MAP_POPULATE, f.fd(), static_cast<off_t>(start));
    if (p == MAP_FAILED) return nullptr;
    base_ = p;
    return static_cast<const uint8_t*>(p) + (off - start);
  }
  void Reset() {
    if (base_) ::munmap(base_, len_);
    base_ = nullptr;
  }

 private:
  void* base_ = nullptr;
  uint64_t len_ = 0;
};

// A write to make: `data` null writes zeros. With `compressed`, one cluster
// whose compressed form is tried first (`data` is the fallback).
struct Op {
  uint64_t off, len;
  const uint8_t* data;
  const uint8_t* compressed = nullptr;
  size_t clen = 0;
};

class Copier {
 public:
  explicit Copier(const CopyPlan& plan) : plan_(plan) {
    for (const CopySource& s : plan.sources) {
      total_ += s.size;
      end_ = std::max(end_, s.start + s.size);
    }
    if (plan.target_backed) shared_ = SharedBottomLayers(*plan.target, 1, *FirstSource());
    const uint64_t cs = plan.target->layer(0).Info().cluster_size;
    unit_ = cs ? cs : 65536;
  }

  Status Run() {
    if (plan_.progress) plan_.progress(0, total_);
    start_ = std::chrono::steady_clock::now();
    const unsigned n = std::clamp(plan_.workers, 1u, 16u);
    // Buffers are made here, so that a failed allocation fails the command, not a thread.
    std::vector<std::vector<uint8_t>> bufs(n, std::vector<uint8_t>(kChunk));
    // The backing chain's bytes, or the compressed clusters.
    // With both, the compressed clusters first, then the backing chain's.
    const size_t back_size = (plan_.target_backed ? kChunk : 0) + (plan_.compress ? kChunk : 0);
    std::vector<std::vector<uint8_t>> backs(n, std::vector<uint8_t>(back_size));
    std::vector<std::thread> threads;
    for (unsigned i = 0; i < n; ++i) threads.emplace_back([this, &bufs, &backs, i] { Work(bufs[i], backs[i]); });
    for (std::thread& t : threads) t.join();
    MutexLock l(turn_mu_);
    return error_;
  }

 private:
  const Chain* FirstSource() const { return plan_.sources.front().chain; }

  // Takes the next piece in guest order; false when all are taken or a
  // worker failed.
  bool Next(Piece* p) {
    MutexLock l(plan_mu_);
    if (plan_.compress) return NextWindow(p);
    while (!Failed() && cur_src_ < plan_.sources.size()) {
      const CopySource& s = plan_.sources[cur_src_];
      if (cur_off_ >= s.size) {
        ++cur_src_;
        cur_off_ = 0;
        pending_ = Resolved{};
        continue;
      }
      p->src = cur_src_;
      p->off = s.start + cur_off_;
      // One block status answer serves the pieces of a long run (a raw
      // file's answer costs a seek through all of it).
      Status st;
      if (pending_.length == 0) st = s.chain->Resolve(0, s.from + cur_off_, s.size - cur_off_, &pending_);
      p->run = pending_;
      p->len = p->run.kind == Resolved::kZero ? p->run.length : std::min(p->run.length, kChunk);
      if (st.ok() && plan_.target_backed) st = ResolveBacking(p);
      if (st.ok() && p->len == 0) st = Corrupt(s.chain->layer_path(0) + ": block status of an empty run");
      if (!st.ok()) {
        Fail(st);
        return false;
      }
      p->run.length = p->back.length = p->len;  // ReadResolved reads `length`
      Advance(&pending_, p->len);
      cur_off_ += p->len;
      p->seq = next_seq_++;
      return true;
    }
    return false;
  }

  // Compressing: the target in aligned windows of kChunk (a multiple of any
  // cluster size), whatever the sources' runs.
  bool NextWindow(Piece* p) REQUIRES(plan_mu_) {
    if (Failed() || win_off_ >= end_) return false;
    p->off = win_off_;
    p->len = std::min(kChunk, end_ - win_off_);
    p->seq = next_seq_++;
    win_off_ += p->len;
    return true;
  }

  // The rest of run `r` after its first `n` bytes.
  static void Advance(Resolved* r, uint64_t n) {
    r->length -= n;
    if (r->file) r->host_offset += n;
  }

  Status ResolveBacking(Piece* p) {
    const Chain& t = *plan_.target;
    if (p->off >= t.VirtualSize(1)) {
      p->back = Resolved{Resolved::kZero, p->len, nullptr, 0, t.depth(), false};
      return Status::OK();
    }
    IMGFS_RETURN_IF_ERROR(t.Resolve(1, p->off, std::min(p->len, t.VirtualSize(1) - p->off), &p->back));
    p->len = std::min(p->len, p->back.length);
    return Status::OK();
  }

  void Work(std::vector<uint8_t>& buf, std::vector<uint8_t>& back) {
    std::vector<Op> ops;
    Mapping map;
    Piece p;
    while (Next(&p)) {
      ops.clear();
      Status st = Plan(p, buf.data(), back.data(), &map, &ops);
      if (!st.ok()) return Fail(st);
      if (plan_.in_order && !WaitTurn(p.seq)) return;
      st = Apply(ops);
      map.Reset();
      if (plan_.in_order) EndTurn();
      if (!st.ok()) return Fail(st);
      Account(p.len);
    }
  }

  // What to write for one piece (reads the source, and the backing chain
  // where the target has one).
  Status Plan(const Piece& p, uint8_t* buf, uint8_t* back, Mapping* map, std::vector<Op>* ops) {
    if (plan_.compress) return PlanCompressed(p, buf, back, ops);
    const bool zero = p.run.kind == Resolved::kZero;
    if (plan_.target_backed) {
      const bool back_zero = p.back.kind == Resolved::kZero;
      if (zero && back_zero) return Status::OK();
      if (Shared(p)) return Status::OK();
      if (zero) {
        ops->push_back({p.off, p.len, nullptr});
        return Status::OK();
      }
      IMGFS_RETURN_IF_ERROR(ReadSource(p, buf));
      if (back_zero)
        std::memset(back, 0, p.len);
      else
        IMGFS_RETURN_IF_ERROR(plan_.target->ReadResolved(p.back, p.off, back));
      Differing(p.off, p.len, buf, back, ops);
      return Status::OK();
    }
    if (zero) {
      if (plan_.sparse_size == 0) {
        std::memset(buf, 0, std::min(p.len, kChunk));
        for (uint64_t at = 0; at < p.len; at += kChunk) ops->push_back({p.off + at, std::min(kChunk, p.len - at), buf});
      } else if (!plan_.target_zero) {
        ops->push_back({p.off, p.len, nullptr});
      }
      return Status::OK();
    }
    const uint8_t* data = p.run.kind == Resolved::kData ? map->Map(*p.run.file, p.run.host_offset, p.len) : nullptr;
    if (!data) {
      IMGFS_RETURN_IF_ERROR(ReadSource(p, buf));
      data = buf;
    }
    if (plan_.sparse_size == 0) {
      ops->push_back({p.off, p.len, data});
      return Status::OK();
    }
    Sparse(p.off, p.len, data, ops);
    return Status::OK();
  }

  // A window cluster by cluster: zero clusters skipped (or zeroed on a
  // target that is not known zero), the others compressed here, on the
  // worker's thread; those that do not shrink are written as they are.
  // On a target with a backing file, a cluster that reads the same from
  // the backing chain is left to it; zeros that differ are written as zeros.
  Status PlanCompressed(const Piece& p, uint8_t* buf, uint8_t* cbuf, std::vector<Op>* ops) {
    bool all_zero = true, back_zero = true;
    IMGFS_RETURN_IF_ERROR(ReadWindow(p.off, p.len, buf, &all_zero));
    uint8_t* back = plan_.target_backed ? cbuf + kChunk : nullptr;
    if (back) IMGFS_RETURN_IF_ERROR(ReadBackingWindow(p.off, p.len, back, &back_zero));
    if (all_zero && (back ? back_zero : plan_.target_zero)) return Status::OK();
    const Image& top = plan_.target->layer(0);
    for (uint64_t i = 0; i < p.len; i += unit_) {
      const uint64_t n = std::min(unit_, p.len - i);
      if (back && std::memcmp(buf + i, back + i, n) == 0) continue;
      if (n < unit_) std::memset(buf + i + n, 0, unit_ - n);  // the disk's last cluster, padded
      const uint8_t* data = all_zero || IsZero(buf + i, unit_) ? nullptr : buf + i;
      if (!data && !back && plan_.target_zero) continue;
      Op op{p.off + i, n, data};
      if (data) {
        IMGFS_ASSIGN_OR_RETURN(op.clen, top.Compress(buf + i, unit_, cbuf + i, unit_ - 1));
        if (op.clen) op.compressed = cbuf + i;
      }
      Op* last = ops->empty() ? nullptr : &ops->back();
      if (last && !op.compressed && !last->compressed && (last->data == nullptr) == !data && last->off + last->len == op.off)
        last->len += n;
      else
        ops->push_back(op);
    }
    return Status::OK();
  }

  // [off, off+len) of the target from whichever sources cover it; *all_zero
  // says whether every byte came from a zero run (nothing to scan).
  Status ReadWindow(uint64_t off, uint64_t len, uint8_t* buf, bool* all_zero) const {
    std::memset(buf, 0, len);
    for (const CopySource& s : plan_.sources) {
      const uint64_t a = std::max(off, s.start), b = std::min(off + len, s.start + s.size);
      for (uint64_t at = a; at < b;) {
        Resolved r;
        const uint64_t src_at = s.from + (at - s.start);
        IMGFS_RETURN_IF_ERROR(s.chain->Resolve(0, src_at, b - at, &r));
        if (r.length == 0) return Corrupt(s.chain->layer_path(0) + ": block status of an empty run");
        if (r.kind != Resolved::kZero) {
          *all_zero = false;
          Status st = s.chain->ReadResolved(r, src_at, buf + (at - off));
          if (!st.ok() && !plan_.salvage) return st;
          if (!st.ok()) {
            Log(LogLevel::kWarning, "error while reading offset " + std::to_string(src_at) + " of " +
                                        s.chain->layer_path(0) + ": " + st.message() + " (copied as zeros)");
            std::memset(buf + (at - off), 0, r.length);
          }
        }
        at += r.length;
      }
    }
    return Status::OK();
  }

  // [off, off+len) of the target's backing chain (zeros past its end);
  // *all_zero says whether all of it came from zero runs.
  Status ReadBackingWindow(uint64_t off, uint64_t len, uint8_t* out, bool* all_zero) const {
    const Chain& t = *plan_.target;
    std::memset(out, 0, len);
    const uint64_t end = std::min(off + len, t.VirtualSize(1));
    for (uint64_t at = off; at < end;) {
      Resolved r;
      IMGFS_RETURN_IF_ERROR(t.Resolve(1, at, end - at, &r));
      if (r.length == 0) return Corrupt(t.layer_path(1) + ": block status of an empty run");
      if (r.kind != Resolved::kZero) {
        *all_zero = false;
        IMGFS_RETURN_IF_ERROR(t.ReadResolved(r, at, out + (at - off)));
      }
      at += r.length;
    }
    return Status::OK();
  }

  Status ReadSource(const Piece& p, uint8_t* buf) {
    const CopySource& s = plan_.sources[p.src];
    const uint64_t at = s.from + p.off - s.start;
    Status st = s.chain->ReadResolved(p.run, at, buf);
    if (st.ok() || !plan_.salvage) return st;
    Log(LogLevel::kWarning, "error while reading offset " + std::to_string(at) + " of " +
                                s.chain->layer_path(0) + ": " + st.message() + " (copied as zeros)");
    std::memset(buf, 0, p.len);
    return Status::OK();
  }

  // Both sides take it from the same backing layer.
  bool Shared(const Piece& p) const {
    if (!shared_ || !p.run.present || !p.back.present) return false;
    const Chain& src = *plan_.sources[p.src].chain;
    if (&src != FirstSource() || plan_.sources[p.src].from != 0) return false;
    const size_t a = src.depth() - p.run.depth, b = plan_.target->depth() - p.back.depth;
    return a == b && a <= shared_;
  }

  // Runs of zeros at least sparse_size long (aligned to it in the target)
  // are skipped on a target that reads as zeros, written as zeros on others.
  void Sparse(uint64_t off, uint64_t len, const uint8_t* buf, std::vector<Op>* ops) const {
    const uint64_t s = plan_.sparse_size;
    for (uint64_t at = off; at < off + len;) {
      const uint64_t end = std::min(off + len, (at / s + 1) * s);
      const bool z = IsZero(buf + (at - off), end - at) && (end - at == s || end == off + len);
      const uint8_t* data = z ? nullptr : buf + (at - off);
      if (!ops->empty() && ops->back().off + ops->back().len == at && (ops->back().data == nullptr) == z) {
        ops->back().len += end - at;
      } else {
        ops->push_back({at, end - at, data});
      }
      at = end;
    }
    if (plan_.target_zero) ops->erase(std::remove_if(ops->begin(), ops->end(), [](const Op& o) { return !o.data; }), ops->end());
  }

  // Units of the target's clusters where the source differs from the backing chain.
  void Differing(uint64_t off, uint64_t len, const uint8_t* buf, const uint8_t* back, std::vector<Op>* ops) const {
    for (uint64_t at = off; at < off + len;) {
      const uint64_t end = std::min(off + len, (at / unit_ + 1) * unit_);
      const size_t i = at - off, k = end - at;
      if (std::memcmp(buf + i, back + i, k) != 0) {
        const uint8_t* data = IsZero(buf + i, k) ? nullptr : buf + i;
        if (!ops->empty() && ops->back().off + ops->back().len == at && (ops->back().data == nullptr) == !data)
          ops->back().len += k;
        else
          ops->push_back({at, k, data});
      }
      at = end;
    }
  }

  Status Apply(const std::vector<Op>& ops) {
    Chain& t = *plan_.target;
    for (const Op& o : ops) {
      if (o.compressed) {
        IMGFS_ASSIGN_OR_RETURN(bool stored, t.WriteCompressed(o.off, o.compressed, o.clen));
        if (stored) continue;
      }
      if (o.data)
        IMGFS_RETURN_IF_ERROR(t.Write(o.off, o.data, o.len));
      else
        IMGFS_RETURN_IF_ERROR(t.WriteZeroes(o.off, o.len, !plan_.target_backed));
    }
    return Status::OK();
  }

  bool WaitTurn(uint64_t seq) {
    UniqueMutexLock l(turn_mu_);
    turn_cv_.wait(l.native(), [&] {
      turn_mu_.AssertHeld();  // wait() holds it when it asks
      return next_write_ == seq || failed_.load();
    });
    return !failed_.load();
  }
  void EndTurn() {
    MutexLock l(turn_mu_);
    ++next_write_;
    turn_cv_.notify_all();
  }

  // Progress, and the rate limit: sleeps until the bytes so far fit it.
  void Account(uint64_t n) {
    uint64_t done;
    {
      MutexLock l(progress_mu_);
      done = done_ += n;
      if (plan_.progress) plan_.progress(done, total_);
    }
    if (!plan_.rate) return;
    const auto due = start_ + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                                  std::chrono::duration<double>(static_cast<double>(done) / plan_.rate));
    // In steps, each followed by a progress call: a request for it
    // (SIGUSR1) is answered while the copy waits.
    while (std::chrono::steady_clock::now() < due) {
      std::this_thread::sleep_until(std::min(due, std::chrono::steady_clock::now() + std::chrono::milliseconds(100)));
      MutexLock l(progress_mu_);
      if (plan_.progress) plan_.progress(done_, total_);
    }
  }

  bool Failed() const { return failed_.load(); }
  void Fail(const Status& st) {
    {
      MutexLock l(turn_mu_);
      if (!failed_.exchange(true)) error_ = st;
    }
    turn_cv_.notify_all();
  }

  const CopyPlan& plan_;
  uint64_t total_ = 0;
  uint64_t end_ = 0;  // of the target's copied part
  size_t shared_ = 0;
  uint64_t unit_;
  std::chrono::steady_clock::time_point start_;

  Mutex plan_mu_;  // the cursor
  size_t cur_src_ GUARDED_BY(plan_mu_) = 0;
  uint64_t cur_off_ GUARDED_BY(plan_mu_) = 0;
  Resolved pending_ GUARDED_BY(plan_mu_){Resolved::kZero, 0};  // what is left of the run at cur_off_
  uint64_t next_seq_ GUARDED_BY(plan_mu_) = 0;
  uint64_t win_off_ GUARDED_BY(plan_mu_) = 0;  // compressing: the next window

  Mutex turn_mu_;
  std::condition_variable turn_cv_;
  uint64_t next_write_ GUARDED_BY(turn_mu_) = 0;
  Status error_ GUARDED_BY(turn_mu_);
  std::atomic<bool> failed_{false};

  Mutex progress_mu_;  // also held around the progress callback
  uint64_t done_ GUARDED_BY(progress_mu_) = 0;
};

}  // namespace

Status CopyImage(const CopyPlan& plan) {
  if (plan.sources.empty()) return InvalidArgument("no source image");
  return Copier(plan).Run();
}

}  // namespace imgfs::ops
