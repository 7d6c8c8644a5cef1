// The keys of encrypted images, for whatever opens them (the CLI, the
// mount, ctl unlock). Keyed by the image file's identity (device and
// inode): any path to the file finds its key, and a key given for one
// file never opens another.
#pragma once

#include <memory>
#include <string>

#include "imagecore/file.h"
#include "imagecore/secret.h"
#include "imagecore/status.h"

namespace imgfs {

// The secret (a passphrase) that opens the image at `path`.
Status AddImageKey(const std::string& path, SecretBytes key);
void AddImageKey(const io::FileStat& file, SecretBytes key);
// Null when no key was given for this file.
std::shared_ptr<const SecretBytes> ImageKey(const io::File& file);
std::shared_ptr<const SecretBytes> ImageKey(const io::FileStat& file);
void ForgetImageKey(const io::FileStat& file);
// Raised by every change of the keys: an open image compares it with the
// one it saw to take a new key (ctl unlock) or forget one (lock).
uint64_t KeyringGeneration();

}  // namespace imgfs
