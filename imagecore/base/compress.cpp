#include "base/compress.h"

#include <string>

#include <zlib.h>
#include <zstd.h>

namespace imgfs {

namespace {
// One decoder per thread, reused: setting one up costs more than decoding
// a small cluster.
struct ZlibState {
  z_stream zs{};
  bool ready = false;
  ~ZlibState() {
    if (ready) inflateEnd(&zs);
  }
};
struct ZstdState {
  ZSTD_DCtx* dctx = ZSTD_createDCtx();
  ~ZstdState() { ZSTD_freeDCtx(dctx); }
};

// Inflates into out with the decoder `state` (set up on first use for
// `window_bits`: negative for raw deflate, 15 for a zlib stream).
int InflateWith(ZlibState& state, int window_bits, const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len,
                Status* setup) {
  z_stream& zs = state.zs;
  if (!state.ready) {
    if (inflateInit2(&zs, window_bits) != Z_OK) {
      *setup = Status(Code::kIoError, "zlib: cannot initialise");
      return Z_STREAM_ERROR;
    }
    state.ready = true;
  } else if (inflateReset(&zs) != Z_OK) {
    *setup = Status(Code::kIoError, "zlib: cannot reset");
    return Z_STREAM_ERROR;
  }
  zs.next_in = const_cast<Bytef*>(in);
  zs.avail_in = static_cast<uInt>(in_len);
  zs.next_out = out;
  zs.avail_out = static_cast<uInt>(out_len);
  return inflate(&zs, Z_FINISH);
}
}  // namespace

Status InflateRaw(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len) {
  thread_local ZlibState state;
  z_stream& zs = state.zs;
  Status setup;
  int r = InflateWith(state, -15, in, in_len, out, out_len, &setup);
  if (!setup.ok()) return setup;
  size_t produced = out_len - zs.avail_out;
  // The compressed run is padded to whole sectors, so the stream may end
  // early (Z_STREAM_END) or stop for lack of output (Z_BUF_ERROR).
  if ((r == Z_STREAM_END || r == Z_BUF_ERROR || r == Z_OK) && produced == out_len) return Status::OK();
  return Corrupt("compressed cluster does not inflate to a full cluster");
}

Status InflateZlib(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len, size_t* produced) {
  thread_local ZlibState state;  // its own: this one expects the zlib header
  Status setup;
  const int r = InflateWith(state, 15, in, in_len, out, out_len, &setup);
  if (!setup.ok()) return setup;
  *produced = out_len - state.zs.avail_out;
  if (r == Z_STREAM_END || ((r == Z_BUF_ERROR || r == Z_OK) && *produced == out_len)) return Status::OK();
  return Corrupt("compressed grain does not inflate (zlib error " + std::to_string(r) + ")");
}

Status ZstdDecompress(const uint8_t* in, size_t in_len, uint8_t* out, size_t out_len) {
  thread_local ZstdState state;
  ZSTD_DCtx* dctx = state.dctx;
  if (!dctx) return Status(Code::kIoError, "zstd: cannot allocate a context");
  ZSTD_DCtx_reset(dctx, ZSTD_reset_session_only);
  ZSTD_inBuffer ib{in, in_len, 0};
  ZSTD_outBuffer ob{out, out_len, 0};
  Status st;
  while (ob.pos < ob.size) {
    size_t r = ZSTD_decompressStream(dctx, &ob, &ib);
    if (ZSTD_isError(r)) {
      st = Corrupt(std::string("zstd: ") + ZSTD_getErrorName(r));
      break;
    }
    if ((r == 0 || ib.pos == ib.size) && ob.pos < ob.size) {
      st = Corrupt("zstd: compressed cluster is truncated");
      break;
    }
  }
  return st;
}

namespace {
// One encoder per thread, reused (setting one up costs more than a cluster).
struct DeflateState {
  z_stream zs{};
  bool ready = false;
  ~DeflateState() {
    if (ready) deflateEnd(&zs);
  }
};
struct ZstdCState {
  ZSTD_CCtx* cctx = ZSTD_createCCtx();
  ~ZstdCState() { ZSTD_freeCCtx(cctx); }
};
}  // namespace

Result<size_t> DeflateRaw4K(const uint8_t* in, size_t in_len, uint8_t* out, size_t cap) {
  thread_local DeflateState state;
  z_stream& zs = state.zs;
  if (!state.ready) {
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -12, 9, Z_DEFAULT_STRATEGY) != Z_OK)
      return Status(Code::kIoError, "zlib: cannot initialise the compressor");
    state.ready = true;
  } else if (deflateReset(&zs) != Z_OK) {
    return Status(Code::kIoError, "zlib: cannot reset the compressor");
  }
  zs.next_in = const_cast<Bytef*>(in);
  zs.avail_in = static_cast<uInt>(in_len);
  zs.next_out = out;
  zs.avail_out = static_cast<uInt>(cap);
  const int r = deflate(&zs, Z_FINISH);
  if (r != Z_STREAM_END) return size_t{0};  // did not fit: not worth compressing
  return cap - zs.avail_out;
}

Result<size_t> ZstdCompress(const uint8_t* in, size_t in_len, uint8_t* out, size_t cap) {
  thread_local ZstdCState state;
  if (!state.cctx) return Status(Code::kIoError, "zstd: cannot allocate a context");
  const size_t r = ZSTD_compressCCtx(state.cctx, out, cap, in, in_len, ZSTD_CLEVEL_DEFAULT);
  if (ZSTD_isError(r)) return size_t{0};  // dstSize_tooSmall, in practice
  return r;
}

}  // namespace imgfs
