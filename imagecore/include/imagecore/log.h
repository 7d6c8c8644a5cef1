// A tiny logging hook: imagecore says what it refused or worked around;
// the program decides where it goes (stderr, syslog, a file).
#pragma once

#include <functional>
#include <string>

namespace imgfs {

enum class LogLevel { kDebug, kInfo, kWarning, kError };

using LogSink = std::function<void(LogLevel, const std::string&)>;

// Replaces the sink (default: stderr for warnings and errors). Not thread
// safe against concurrent Log calls: set it once at start-up.
void SetLogSink(LogSink sink);
void Log(LogLevel level, const std::string& msg);

}  // namespace imgfs
