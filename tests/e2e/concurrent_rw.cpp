// concurrent_rw - concurrent read/write stress test against a file (typically a
// mounted imgfs disk.raw), verified against an in-memory model.
//
// usage: concurrent_rw FILE SEED THREADS OPS MODEL_OUT
//
//   FILE       existing file (regular file or block device); only the first
//              min(size, 64 MiB) bytes are used
//   SEED       unsigned integer; the run is reproducible per thread for a seed
//   THREADS    number of worker threads (1..256)
//   OPS        operations per thread
//   MODEL_OUT  where the final model (expected content of the used region) is
//              written, e.g. for `qemu-img compare MODEL_OUT image`.  Only the
//              used region (N bytes) is written; if FILE is larger than 64 MiB
//              the rest is not part of the model.
//
// Each worker does random pwrite (1 B .. 256 KiB, unaligned offsets, often in a
// shared "hot" region so threads overlap) and pread (verified against the
// model) operations, plus an occasional fdatasync.  Every operation holds a
// byte-range lock on the range it touches: overlapping operations are
// serialized (FIFO), disjoint ones run in parallel.  The model is updated under
// that lock, so it is exactly the expected file content at all times.
//
// At the end the whole region is read back through a fresh descriptor and
// compared with the model.  Exit status: 0 = everything matched, 1 = a
// mismatch or I/O error, 2 = usage error.  One summary line is printed on
// stdout; details of failures go to stderr.
//
// Written data is recognisable: it is made of 16-byte records aligned on file
// offsets that are multiples of 16:
//   byte 0     'W'
//   byte 1     thread index
//   bytes 2-5  op number (LE)
//   bytes 6-9  (file offset of record) / 16 (LE)
//   bytes 10-13 per-op random salt
//   bytes 14-15 0xC3 0x3C
// so a mismatch report can say which write the bytes came from.

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <list>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace {

constexpr uint64_t kMaxRegion = 64ull << 20;
constexpr uint64_t kMaxIo = 256ull << 10;
constexpr uint64_t kHotRegion = 1ull << 20;
constexpr uint64_t kCluster = 64ull << 10;

// ---------------------------------------------------------------- RNG
struct Rng {
    uint64_t s;
    explicit Rng(uint64_t seed) : s(seed) {}
    uint64_t next() {  // splitmix64
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
    // uniform in [lo, hi], hi >= lo
    uint64_t range(uint64_t lo, uint64_t hi) { return lo + next() % (hi - lo + 1); }
    bool chance(unsigned percent) { return next() % 100 < percent; }
};

// ---------------------------------------------------------------- range lock
// FIFO interval lock.  A request is granted when it overlaps no granted range
// and no older waiting request.  The oldest waiter only waits for granted
// ranges, which are always released, so there is no deadlock and no
// starvation.
class RangeLock {
  public:
    struct Entry {
        uint64_t ticket;
        uint64_t begin, end;  // [begin, end)
        bool granted;
    };
    using Handle = std::list<Entry>::iterator;

    Handle lock(uint64_t off, uint64_t len) {
        std::unique_lock<std::mutex> g(mu_);
        Handle h = entries_.insert(entries_.end(), Entry{next_ticket_++, off, off + len, false});
        cv_.wait(g, [&] { return can_grant(h); });
        h->granted = true;
        return h;
    }
    void unlock(Handle h) {
        {
            std::lock_guard<std::mutex> g(mu_);
            entries_.erase(h);
        }
        cv_.notify_all();
    }

  private:
    bool can_grant(Handle h) const {
        for (auto it = entries_.begin(); it != entries_.end(); ++it) {
            if (it == h) continue;
            bool overlap = it->begin < h->end && h->begin < it->end;
            if (!overlap) continue;
            if (it->granted || it->ticket < h->ticket) return false;
        }
        return true;
    }
    std::mutex mu_;
    std::condition_variable cv_;
    std::list<Entry> entries_;
    uint64_t next_ticket_ = 0;
};

class RangeGuard {
  public:
    RangeGuard(RangeLock& l, uint64_t off, uint64_t len) : l_(l), h_(l.lock(off, len)) {}
    ~RangeGuard() { l_.unlock(h_); }
    RangeGuard(const RangeGuard&) = delete;
    RangeGuard& operator=(const RangeGuard&) = delete;

  private:
    RangeLock& l_;
    RangeLock::Handle h_;
};

// ---------------------------------------------------------------- shared state
struct Shared {
    std::string path;
    uint64_t region = 0;
    std::vector<uint8_t> model;
    RangeLock rlock;
    std::atomic<bool> failed{false};
    std::atomic<uint64_t> writes{0}, reads{0}, syncs{0}, bytes_written{0}, bytes_read{0};
    std::atomic<uint64_t> read_mismatches{0}, io_errors{0};
    std::atomic<uint64_t> bad_reports{0};
};

void record_byte(uint8_t* rec, unsigned tid, uint32_t op, uint64_t rec_off, uint32_t salt) {
    uint32_t idx = static_cast<uint32_t>(rec_off / 16);
    rec[0] = 'W';
    rec[1] = static_cast<uint8_t>(tid);
    std::memcpy(rec + 2, &op, 4);  // little-endian host assumed (x86/arm)
    std::memcpy(rec + 6, &idx, 4);
    std::memcpy(rec + 10, &salt, 4);
    rec[14] = 0xC3;
    rec[15] = 0x3C;
}

// Fill buf (len bytes, to be written at file offset off) with records.
void fill_pattern(std::vector<uint8_t>& buf, uint64_t off, uint64_t len, unsigned tid, uint32_t op,
                  uint32_t salt) {
    buf.resize(len);
    uint8_t rec[16];
    uint64_t pos = off;
    uint64_t end = off + len;
    while (pos < end) {
        uint64_t rec_off = pos & ~uint64_t(15);
        record_byte(rec, tid, op, rec_off, salt);
        uint64_t from = pos - rec_off;
        uint64_t n = std::min<uint64_t>(16 - from, end - pos);
        std::memcpy(buf.data() + (pos - off), rec + from, n);
        pos += n;
    }
}

std::string hexdump(const uint8_t* p, size_t n) {
    std::string s;
    char b[4];
    for (size_t i = 0; i < n; ++i) {
        std::snprintf(b, sizeof b, "%02x", p[i]);
        s += b;
        if (i + 1 < n) s += (i % 16 == 15) ? " | " : " ";
    }
    return s;
}

// Describe the 16-byte record that contains offset `at` (file offset), given
// a view `data` of the file starting at file offset `base` with `n` bytes.
// Writes start and end at arbitrary offsets, so a record may be a mix of two
// writes; the caller also describes the following record.
std::string describe(const uint8_t* data, uint64_t base, uint64_t n, uint64_t at) {
    uint64_t rec_off = at & ~uint64_t(15);
    if (rec_off < base || rec_off + 16 > base + n) return "(record not fully in view)";
    const uint8_t* r = data + (rec_off - base);
    if (r[0] != 'W' || r[14] != 0xC3 || r[15] != 0x3C) {
        bool zero = std::all_of(r, r + 16, [](uint8_t c) { return c == 0; });
        return zero ? "(zeros)" : "(not a concurrent_rw record)";
    }
    uint32_t op, idx, salt;
    std::memcpy(&op, r + 2, 4);
    std::memcpy(&idx, r + 6, 4);
    std::memcpy(&salt, r + 10, 4);
    char b[160];
    std::snprintf(b, sizeof b, "(written by thread %u op %u salt %08x for offset %llu%s)", r[1], op, salt,
                  static_cast<unsigned long long>(uint64_t(idx) * 16),
                  uint64_t(idx) * 16 == rec_off ? "" : " -- MISPLACED");
    return b;
}

std::mutex g_report_mu;  // serializes mismatch reports

void report_mismatch(const char* what, const uint8_t* expect, const uint8_t* got, uint64_t base, uint64_t n,
                     uint64_t first, uint64_t count) {
    if (count == 0) return;
    std::lock_guard<std::mutex> g(g_report_mu);
    uint64_t lo = std::max(base, first & ~uint64_t(15));
    uint64_t hi = std::min(base + n, lo + 32);
    std::fprintf(stderr,
                 "%s: mismatch in [%llu,+%llu): first at offset %llu, %llu bytes differ\n"
                 "  expected @%llu: %s\n    %s / next: %s\n"
                 "  actual   @%llu: %s\n    %s / next: %s\n",
                 what, (unsigned long long)base, (unsigned long long)n, (unsigned long long)first,
                 (unsigned long long)count, (unsigned long long)lo,
                 hexdump(expect + (lo - base), hi - lo).c_str(), describe(expect, base, n, first).c_str(),
                 describe(expect, base, n, first + 16).c_str(), (unsigned long long)lo,
                 hexdump(got + (lo - base), hi - lo).c_str(), describe(got, base, n, first).c_str(),
                 describe(got, base, n, first + 16).c_str());
}

// ---------------------------------------------------------------- I/O helpers
bool full_pwrite(int fd, const uint8_t* p, uint64_t n, uint64_t off, std::string& err) {
    while (n > 0) {
        ssize_t r = ::pwrite(fd, p, n, static_cast<off_t>(off));
        if (r < 0) {
            if (errno == EINTR) continue;
            err = std::string("pwrite: ") + std::strerror(errno);
            return false;
        }
        if (r == 0) {
            err = "pwrite returned 0";
            return false;
        }
        p += r;
        n -= static_cast<uint64_t>(r);
        off += static_cast<uint64_t>(r);
    }
    return true;
}

bool full_pread(int fd, uint8_t* p, uint64_t n, uint64_t off, std::string& err) {
    while (n > 0) {
        ssize_t r = ::pread(fd, p, n, static_cast<off_t>(off));
        if (r < 0) {
            if (errno == EINTR) continue;
            err = std::string("pread: ") + std::strerror(errno);
            return false;
        }
        if (r == 0) {
            err = "pread: unexpected end of file";
            return false;
        }
        p += r;
        n -= static_cast<uint64_t>(r);
        off += static_cast<uint64_t>(r);
    }
    return true;
}

uint64_t pick_len(Rng& rng) {
    switch (rng.next() % 4) {
        case 0: return rng.range(1, 511);
        case 1: return rng.range(512, 8191);
        case 2: return rng.range(8192, 65535);
        default: return rng.range(65536, kMaxIo);
    }
}

uint64_t pick_off(Rng& rng, uint64_t region, uint64_t len) {
    uint64_t max_off = region - len;  // len <= region
    unsigned kind = static_cast<unsigned>(rng.next() % 10);
    uint64_t off;
    if (kind < 3) {
        // hot region: lots of overlap between threads
        off = rng.range(0, std::min(max_off, kHotRegion));
    } else if (kind < 5) {
        // straddle / start near a cluster boundary
        uint64_t c = rng.range(0, region / kCluster) * kCluster;
        uint64_t d = rng.range(0, 1024);
        off = rng.chance(50) ? c + d : (c > d ? c - d : 0);
        off = std::min(off, max_off);
    } else {
        off = rng.range(0, max_off);
    }
    return off;
}

// ---------------------------------------------------------------- worker
void worker(Shared& sh, unsigned tid, uint64_t seed, uint64_t ops) {
    Rng rng(seed * 1000003ull + tid * 0x51ED27ull + 1);
    int fd = ::open(sh.path.c_str(), O_RDWR);
    if (fd < 0) {
        std::fprintf(stderr, "thread %u: open %s: %s\n", tid, sh.path.c_str(), std::strerror(errno));
        sh.io_errors++;
        sh.failed = true;
        return;
    }
    std::vector<uint8_t> buf, expect_copy;
    std::string err;
    for (uint64_t op = 0; op < ops; ++op) {
        if (rng.chance(2)) {
            if (::fdatasync(fd) != 0) {
                std::fprintf(stderr, "thread %u op %llu: fdatasync: %s\n", tid, (unsigned long long)op,
                             std::strerror(errno));
                sh.io_errors++;
                sh.failed = true;
            }
            sh.syncs++;
            continue;
        }
        uint64_t len = std::min(pick_len(rng), sh.region);
        uint64_t off = pick_off(rng, sh.region, len);
        if (rng.chance(50)) {
            uint32_t salt = static_cast<uint32_t>(rng.next());
            fill_pattern(buf, off, len, tid, static_cast<uint32_t>(op), salt);
            RangeGuard g(sh.rlock, off, len);
            if (!full_pwrite(fd, buf.data(), len, off, err)) {
                std::fprintf(stderr, "thread %u op %llu: write [%llu,+%llu): %s\n", tid, (unsigned long long)op,
                             (unsigned long long)off, (unsigned long long)len, err.c_str());
                sh.io_errors++;
                sh.failed = true;
                // content of the range is now unknown; keep the old model
                continue;
            }
            std::memcpy(sh.model.data() + off, buf.data(), len);
            sh.writes++;
            sh.bytes_written += len;
        } else {
            buf.resize(len);
            RangeGuard g(sh.rlock, off, len);
            if (!full_pread(fd, buf.data(), len, off, err)) {
                std::fprintf(stderr, "thread %u op %llu: read [%llu,+%llu): %s\n", tid, (unsigned long long)op,
                             (unsigned long long)off, (unsigned long long)len, err.c_str());
                sh.io_errors++;
                sh.failed = true;
                continue;
            }
            sh.reads++;
            sh.bytes_read += len;
            const uint8_t* m = sh.model.data() + off;
            if (std::memcmp(m, buf.data(), len) != 0) {
                uint64_t first = 0, count = 0;
                bool have_first = false;
                for (uint64_t i = 0; i < len; ++i) {
                    if (m[i] != buf[i]) {
                        if (!have_first) {
                            first = i;
                            have_first = true;
                        }
                        ++count;
                    }
                }
                sh.read_mismatches++;
                sh.failed = true;
                if (sh.bad_reports++ < 5) {
                    char what[96];
                    std::snprintf(what, sizeof what, "thread %u op %llu read", tid, (unsigned long long)op);
                    report_mismatch(what, m, buf.data(), off, len, off + first, count);
                }
            }
        }
    }
    if (::fdatasync(fd) != 0) {
        std::fprintf(stderr, "thread %u: final fdatasync: %s\n", tid, std::strerror(errno));
        sh.io_errors++;
        sh.failed = true;
    }
    if (::close(fd) != 0) {
        std::fprintf(stderr, "thread %u: close: %s\n", tid, std::strerror(errno));
        sh.io_errors++;
        sh.failed = true;
    }
}

bool parse_u64(const char* s, uint64_t& out) {
    if (!s || !*s) return false;
    char* end = nullptr;
    errno = 0;
    unsigned long long v = std::strtoull(s, &end, 0);
    if (errno != 0 || *end != '\0' || s[0] == '-') return false;
    out = v;
    return true;
}

bool write_model(const std::string& path, const std::vector<uint8_t>& model, std::string& err) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        err = "open " + path + ": " + std::strerror(errno);
        return false;
    }
    // Sparse output: skip all-zero 64 KiB blocks.
    const uint64_t blk = 64 << 10;
    bool ok = true;
    for (uint64_t off = 0; off < model.size() && ok; off += blk) {
        uint64_t n = std::min<uint64_t>(blk, model.size() - off);
        const uint8_t* p = model.data() + off;
        if (std::all_of(p, p + n, [](uint8_t c) { return c == 0; })) continue;
        ok = full_pwrite(fd, p, n, off, err);
    }
    if (ok && ::ftruncate(fd, static_cast<off_t>(model.size())) != 0) {
        err = std::string("ftruncate: ") + std::strerror(errno);
        ok = false;
    }
    if (::close(fd) != 0 && ok) {
        err = std::string("close: ") + std::strerror(errno);
        ok = false;
    }
    return ok;
}

}  // namespace

int main(int argc, char** argv) {
    if (argc != 6) {
        std::fprintf(stderr, "usage: %s FILE SEED THREADS OPS MODEL_OUT\n", argv[0]);
        return 2;
    }
    Shared sh;
    sh.path = argv[1];
    uint64_t seed, threads, ops;
    if (!parse_u64(argv[2], seed) || !parse_u64(argv[3], threads) || !parse_u64(argv[4], ops) || threads == 0 ||
        threads > 256) {
        std::fprintf(stderr, "concurrent_rw: bad SEED/THREADS/OPS (THREADS must be 1..256)\n");
        return 2;
    }
    std::string model_out = argv[5];

    int fd = ::open(sh.path.c_str(), O_RDONLY);
    if (fd < 0) {
        std::fprintf(stderr, "concurrent_rw: open %s: %s\n", sh.path.c_str(), std::strerror(errno));
        return 1;
    }
    struct stat st;
    if (::fstat(fd, &st) != 0) {
        std::fprintf(stderr, "concurrent_rw: fstat: %s\n", std::strerror(errno));
        return 1;
    }
    uint64_t size = static_cast<uint64_t>(st.st_size);
    if (S_ISBLK(st.st_mode)) {
        off_t e = ::lseek(fd, 0, SEEK_END);
        size = e > 0 ? static_cast<uint64_t>(e) : 0;
    }
    if (size == 0) {
        std::fprintf(stderr, "concurrent_rw: %s is empty\n", sh.path.c_str());
        return 1;
    }
    sh.region = std::min(size, kMaxRegion);
    sh.model.assign(sh.region, 0);
    std::string err;
    if (!full_pread(fd, sh.model.data(), sh.region, 0, err)) {
        std::fprintf(stderr, "concurrent_rw: initial read: %s\n", err.c_str());
        return 1;
    }
    ::close(fd);

    std::vector<std::thread> ts;
    for (unsigned t = 0; t < threads; ++t) ts.emplace_back(worker, std::ref(sh), t, seed, ops);
    for (auto& t : ts) t.join();

    // Final verification through a fresh descriptor.
    bool final_ok = true;
    long long first_bad = -1;
    uint64_t bad_bytes = 0;
    {
        std::vector<uint8_t> got(sh.region);
        int vfd = ::open(sh.path.c_str(), O_RDONLY);
        if (vfd < 0) {
            std::fprintf(stderr, "concurrent_rw: reopen %s: %s\n", sh.path.c_str(), std::strerror(errno));
            final_ok = false;
        } else if (!full_pread(vfd, got.data(), sh.region, 0, err)) {
            std::fprintf(stderr, "concurrent_rw: final read: %s\n", err.c_str());
            final_ok = false;
        } else {
            for (uint64_t i = 0; i < sh.region; ++i) {
                if (got[i] != sh.model[i]) {
                    if (first_bad < 0) first_bad = static_cast<long long>(i);
                    ++bad_bytes;
                }
            }
            if (first_bad >= 0) {
                final_ok = false;
                uint64_t fb = static_cast<uint64_t>(first_bad);
                uint64_t base = fb & ~uint64_t(15);
                uint64_t n = std::min<uint64_t>(64, sh.region - base);
                report_mismatch("final compare", sh.model.data() + base, got.data() + base, base, n, fb, bad_bytes);
            }
        }
        if (vfd >= 0) ::close(vfd);
    }

    bool model_ok = write_model(model_out, sh.model, err);
    if (!model_ok) std::fprintf(stderr, "concurrent_rw: writing model: %s\n", err.c_str());

    bool ok = final_ok && model_ok && !sh.failed;
    std::printf(
        "concurrent_rw: %s region=%llu threads=%llu ops=%llu writes=%llu reads=%llu syncs=%llu "
        "bytes_written=%llu read_mismatches=%llu io_errors=%llu final_mismatch=%s",
        ok ? "OK" : "FAIL", (unsigned long long)sh.region, (unsigned long long)threads, (unsigned long long)ops,
        (unsigned long long)sh.writes.load(), (unsigned long long)sh.reads.load(),
        (unsigned long long)sh.syncs.load(), (unsigned long long)sh.bytes_written.load(),
        (unsigned long long)sh.read_mismatches.load(), (unsigned long long)sh.io_errors.load(),
        first_bad < 0 ? (final_ok ? "none" : "unknown") : "");
    if (first_bad >= 0) std::printf("offset:%lld(%llu bytes)", first_bad, (unsigned long long)bad_bytes);
    std::printf("\n");
    std::fflush(stdout);
    return ok ? 0 : 1;
}
