#include "progress.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <memory>
#include <mutex>

#include "imagecore/size.h"

namespace imgfs::cli {

namespace {
std::atomic<bool> g_usr1{false};
std::atomic<int> g_last_whole{-1};  // the last whole percent printed as a line
void OnUsr1(int) { g_usr1.store(true); }

class Printer {
 public:
  Printer(bool json, bool tty) : json_(json), tty_(tty), start_(std::chrono::steady_clock::now()) {}

  void Update(uint64_t done, uint64_t total) {
    std::lock_guard<std::mutex> l(mu_);
    const double pct = total ? 100.0 * double(done) / double(total) : 100.0;
    const bool asked = g_usr1.exchange(false);
    const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const double rate = secs > 0 ? double(done) / secs : 0;
    const double eta = rate > 0 ? double(total - std::min(done, total)) / rate : 0;
    if (json_) {
      if (!asked && int(pct) == last_whole_ && done != total) return;
      std::printf("{\"done\": %llu, \"total\": %llu, \"percent\": %.2f, \"rate\": %.0f, \"eta\": %.1f}\n",
                  (unsigned long long)done, (unsigned long long)total, pct, rate, eta);
    } else if (tty_) {
      const auto left = static_cast<unsigned long long>(eta);
      std::printf("    (%.2f/100%%) %s of %s, %s/s, %llu:%02llu left   \r", pct, HumanSize(done).c_str(),
                  HumanSize(total).c_str(), HumanSize(uint64_t(rate)).c_str(), left / 60, left % 60);
    } else {
      if (!asked && int(pct) == last_whole_) return;
      std::printf("    (%.2f/100%%)\n", asked ? pct : double(int(pct)));
    }
    last_whole_ = int(pct);
    g_last_whole.store(last_whole_);
    std::fflush(stdout);
  }

 private:
  std::mutex mu_;  // updates come from several copying threads
  const bool json_, tty_;
  const std::chrono::steady_clock::time_point start_;
  int last_whole_ = -1;
};
}  // namespace

void AddProgressArgs(CLI::App& app, ProgressArgs* p) {
  app.add_flag("-p", p->show, "show progress");
  app.add_option("--progress", p->mode, "json: print progress as one JSON object per line")
      ->check(CLI::IsMember({"json"}));
}

void CatchUsr1() {
  struct sigaction sa {};
  sa.sa_handler = OnUsr1;
  sa.sa_flags = SA_RESTART;  // no system call of the copy fails for it
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, nullptr);
}

Chain::Progress ProgressPrinter(const ProgressArgs& p, bool quiet) {
  const bool json = p.mode == "json";
  if (quiet || (!p.show && !json)) {
    // Not asked for: one line each time SIGUSR1 asks, as qemu-img.
    return [](uint64_t done, uint64_t total) {
      if (!g_usr1.exchange(false)) return;
      std::printf("    (%.2f/100%%)\n", total ? 100.0 * double(done) / double(total) : 100.0);
      std::fflush(stdout);
    };
  }
  auto printer = std::make_shared<Printer>(json, ::isatty(STDOUT_FILENO) == 1);
  return [printer](uint64_t done, uint64_t total) { printer->Update(done, total); };
}

void FinishProgress(const ProgressArgs& p, bool quiet) {
  if (quiet || p.mode == "json" || !p.show) return;
  if (::isatty(STDOUT_FILENO) == 1)
    std::printf("\n");
  else if (g_last_whole.load() != 100)
    std::printf("    (100.00/100%%)\n");
  std::fflush(stdout);
}

}  // namespace imgfs::cli
