#include "image_args.h"

#include <map>
#include <set>
#include <sstream>

#include "imagecore/chain.h"
#include "imagecore/format.h"
#include "imagecore/keyring.h"

namespace imgfs::cli {

void AddImageArgs(CLI::App& app, ImageArgs* a, bool format, bool source_cache) {
  if (format) app.add_option("-f,--format", a->format, "image format (default: probe by content)");
  app.add_flag("-U,--force-share", a->force_share, "open the image even if another program uses it (read-only use)");
  app.add_option("-t", a->cache, "cache mode (accepted for qemu-img compatibility; imgfs has one I/O path)");
  if (source_cache) app.add_option("-T", a->cache, "source cache mode (accepted, as -t)");
  app.add_flag("--image-opts", a->image_opts, "FILE is an option string: driver=FMT,file.filename=PATH");
  app.add_option("--object", a->objects, "a secret: secret,id=ID,data=TEXT|file=PATH[,format=base64][,keyid=ID,iv=B64]")->allow_extra_args(false);
}

namespace {
// "a=b,c=d" as qemu splits it: ",," is a literal comma.
Result<std::vector<std::pair<std::string, std::string>>> SplitOptions(const std::string& text) {
  std::vector<std::pair<std::string, std::string>> out;
  std::string cur;
  for (size_t i = 0; i <= text.size(); ++i) {
    if (i < text.size() && text[i] == ',' && i + 1 < text.size() && text[i + 1] == ',') {
      cur += ',';
      ++i;
      continue;
    }
    if (i == text.size() || text[i] == ',') {
      const auto eq = cur.find('=');
      if (eq == std::string::npos) return InvalidArgument("Cannot find device='" + text + "' nor node-name='" + text + "'");
      out.emplace_back(cur.substr(0, eq), cur.substr(eq + 1));
      cur.clear();
      continue;
    }
    cur += text[i];
  }
  return out;
}

SecretStore& MutableSecrets() {
  static SecretStore* store = new SecretStore();
  return *store;
}

}  // namespace

const SecretStore& Secrets() { return MutableSecrets(); }

Status LoadObjects(const std::vector<std::string>& objects) {
  static std::set<std::string> loaded;
  for (const std::string& o : objects) {
    if (loaded.count(o)) continue;
    IMGFS_RETURN_IF_ERROR(MutableSecrets().AddObject(o));
    loaded.insert(o);
  }
  return Status::OK();
}

namespace {

// "key-secret", "encrypt.key-secret", each after "backing." once per layer
// down: the depth it keys, or -1.
int KeySecretDepth(const std::string& key) {
  int depth = 0;
  std::string k = key;
  while (k.rfind("backing.", 0) == 0) {
    k = k.substr(8);
    ++depth;
  }
  return k == "key-secret" || k == "encrypt.key-secret" ? depth : -1;
}

// Gives each layer named in `ids` (depth -> secret id) its key: the top at
// `path`, the layers below as its backing chain names them.
Status AddLayerKeys(const std::string& path, const std::string& format, const std::map<int, std::string>& ids) {
  std::string layer = path, layer_format = format;
  for (int d = 0; !ids.empty() && d <= ids.rbegin()->first; ++d) {
    if (d > 0) {
      IMGFS_ASSIGN_OR_RETURN(auto img, OpenImage(layer, layer_format, OpenOptions(false)));
      auto ref = img->Backing();
      if (!ref) return InvalidArgument(layer + " has no backing file to take a key");
      layer = ResolveBacking(layer, *ref);
      layer_format = ref->format;
    }
    auto it = ids.find(d);
    if (it == ids.end()) continue;
    IMGFS_ASSIGN_OR_RETURN(const SecretBytes* s, Secrets().Find(it->second));
    IMGFS_RETURN_IF_ERROR(AddImageKey(layer, SecretBytes(s->data(), s->size())).Prefixed("Could not open '" + layer + "'"));
  }
  return Status::OK();
}

}  // namespace

Result<ImageSpec> ResolveImageOpts(const std::string& operand) {
  auto opts = SplitOptions(operand);
  if (!opts.ok()) return opts.status().Prefixed("Could not open '" + operand + "'");
  ImageSpec spec;
  std::map<int, std::string> key_ids;  // layer depth -> secret id
  for (const auto& [key, value] : opts.value()) {
    if (key == "driver") {
      spec.format = value;
    } else if (key == "file.filename" || key == "filename") {
      spec.path = value;
    } else if (key == "file.driver" && value == "file") {
      continue;
    } else if (KeySecretDepth(key) >= 0) {
      key_ids[KeySecretDepth(key)] = value;  // luks's and qcow2's spellings, and the layers below
    } else if (key == "read-only" || key == "force-share" || key == "cache.direct" || key == "cache.no-flush") {
      continue;  // imgfs opens as the subcommand needs; no other cache modes
    } else {
      return Unsupported("Could not open '" + operand + "': option '" + key + "' is not supported by imgfs");
    }
  }
  if (spec.path.empty()) return InvalidArgument("Could not open '" + operand + "': no file.filename given");
  IMGFS_RETURN_IF_ERROR(AddLayerKeys(spec.path, spec.format, key_ids));
  return spec;
}

Result<ImageSpec> ResolveImage(const ImageArgs& a, const std::string& operand) {
  IMGFS_RETURN_IF_ERROR(LoadObjects(a.objects));
  if (!a.image_opts) return ImageSpec{operand, a.format};
  return ResolveImageOpts(operand);
}

}  // namespace imgfs::cli
