#include "pidfile.h"

#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>

#include "imagecore/file.h"

namespace imgfs::fs {

namespace {
std::string RunDir() {
  if (getuid() == 0) return "/run/imgfs";
  const char* xdg = std::getenv("XDG_RUNTIME_DIR");
  if (xdg && *xdg) return std::string(xdg) + "/imgfs";
  return "/tmp/imgfs-" + std::to_string(getuid());
}
}  // namespace

std::string PidFilePath(const std::string& real) {
  std::ostringstream name;
  name << std::hex << std::hash<std::string>{}(real);
  return RunDir() + "/" + name.str() + ".pid";
}

pid_t ReadPidFile(const std::string& mountpoint) {
  std::ifstream in(PidFilePath(io::RealPath(mountpoint)));
  pid_t pid = -1;
  std::string path;
  if (!(in >> pid) || !std::getline(in >> std::ws, path)) return -1;
  if (path != io::RealPath(mountpoint)) return -1;
  return pid;
}

PidFile::PidFile(const std::string& real_mountpoint) : path_(PidFilePath(real_mountpoint)) {
  ::mkdir(RunDir().c_str(), 0700);
  std::ofstream out(path_);
  out << getpid() << "\n" << real_mountpoint << "\n";
  if (!out) path_.clear();
}

PidFile::~PidFile() {
  if (!path_.empty()) ::unlink(path_.c_str());
}

}  // namespace imgfs::fs
