#include <memory>

#include "commands.h"
#include "imgfs_fuse.h"

namespace imgfs::cli {

Runner AddMount(CLI::App& app) {
  auto c = std::make_shared<fs::MountConfig>();
  app.add_flag("-r,--read-only", c->read_only, "serve every image read-only");
  app.add_flag("-f,--foreground", c->foreground, "stay in the foreground and log to stderr");
  app.add_option("-o", c->fuse_options,
                 "mount options, comma separated: allow_shrink, claim=mount|write, cache_limit=SIZE (default "
                 "256M), cache_idle=SECONDS (default 30), keydir=DIR (DIR/IMAGE.key unlocks IMAGE), and FUSE's own");
  app.add_option("--key", c->keys, "IMAGE=FILE: FILE holds the secret of the encrypted image IMAGE (repeatable)")
      ->allow_extra_args(false);
  app.add_option("--log", c->log_file, "append the log to FILE");
  app.add_option("--threads", c->threads, "FUSE worker threads (default 16)");
  app.add_option("SOURCE", c->source, "a directory of images, or one image file")->required();
  app.add_option("MOUNTPOINT", c->mountpoint, "an empty directory")->required();
  return [c] { return fs::RunMount(*c); };
}

Runner AddUmount(CLI::App& app) {
  auto mp = std::make_shared<std::string>();
  app.add_option("MOUNTPOINT", *mp, "the mount to flush and unmount")->required();
  return [mp] { return fs::Unmount(*mp); };
}

}  // namespace imgfs::cli
