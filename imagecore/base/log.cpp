#include "imagecore/log.h"

#include <cstdio>

namespace imgfs {
namespace {
LogSink& Sink() {
  static LogSink sink = [](LogLevel level, const std::string& msg) {
    if (level >= LogLevel::kWarning) std::fprintf(stderr, "imgfs: %s\n", msg.c_str());
  };
  return sink;
}
}  // namespace

void SetLogSink(LogSink sink) { Sink() = std::move(sink); }
void Log(LogLevel level, const std::string& msg) { Sink()(level, msg); }

}  // namespace imgfs
