// `info`: what qemu-img info shows, as text and as JSON (same field names
// and order as qemu-img 7.2, so scripts that parse one parse the other).
#include <nlohmann/json.hpp>
#include <sstream>

#include "base/json_text.h"
#include "imagecore/chain.h"
#include "imagecore/ops.h"
#include "imagecore/size.h"

namespace imgfs::ops {

Result<std::vector<LayerInfo>> CollectInfo(const std::string& path, const std::string& format, bool backing_chain,
                                           const io::ImageAccess& access) {
  std::vector<LayerInfo> out;
  std::unique_ptr<Image> above;  // alive until the walk has checked its parent
  auto open = [&](const LayerRef& ref) {
    return OpenImage(ref.path, ref.format, LayerOptions(access, ref.depth == 0));
  };
  auto visit = [&](const LayerRef& ref, std::unique_ptr<Image> img, const Status& link) -> Result<bool> {
    if (!link.ok()) out.back().parent_mismatch = link.message();
    // Without the chain, the parent is opened only to see whether it is
    // the one the image was made on.
    if (!backing_chain && ref.depth > 0) return false;
    LayerInfo li;
    li.filename = ref.path;
    li.info = img->Info();
    li.actual_size = img->AllocatedBytes();
    li.snapshots = img->Snapshots();
    if (auto backing = img->Backing()) {
      li.backing_filename = backing->name;
      li.full_backing_filename = ResolveBacking(ref.path, *backing);
      li.backing_format = backing->format;
    }
    out.push_back(std::move(li));
    above = std::move(img);
    return true;
  };
  Status walked = WalkChain(path, format, nullptr, open, visit);
  // Without the chain, a parent that cannot be opened is for the chain to report.
  if (!walked.ok() && (backing_chain || out.empty())) return walked;
  return out;
}

namespace {

nlohmann::ordered_json FieldsJson(const std::vector<ImageInfo::Field>& fields, const ImageInfo* with_bitmaps) {
  nlohmann::ordered_json data = nlohmann::ordered_json::object();
  for (const auto& f : fields) {
    switch (f.kind) {
      case ImageInfo::Field::kString: data[f.key] = f.s; break;
      case ImageInfo::Field::kBool: data[f.key] = f.b; break;
      case ImageInfo::Field::kInt: data[f.key] = f.i; break;
      case ImageInfo::Field::kUint: data[f.key] = f.u; break;
      case ImageInfo::Field::kList: {
        nlohmann::ordered_json arr = nlohmann::ordered_json::array();
        for (const auto& item : f.list) arr.push_back(FieldsJson(item, nullptr));
        data[f.key] = arr;
        break;
      }
      case ImageInfo::Field::kObject: data[f.key] = FieldsJson(f.list.at(0), nullptr); break;
      case ImageInfo::Field::kBitmaps: {
        if (!with_bitmaps || with_bitmaps->bitmaps.empty()) break;
        nlohmann::ordered_json arr = nlohmann::ordered_json::array();
        for (const auto& b : with_bitmaps->bitmaps)
          arr.push_back({{"flags", b.flags}, {"name", b.name}, {"granularity", b.granularity}});
        data[f.key] = arr;
        break;
      }
    }
  }
  return data;
}

void BitmapsHuman(std::ostream& o, const std::vector<ImageInfo::Bitmap>& bitmaps);

void FieldsHuman(std::ostream& o, const std::vector<ImageInfo::Field>& fields, const std::string& indent,
                 const ImageInfo* with_bitmaps) {
  for (const auto& f : fields) {
    if (f.kind == ImageInfo::Field::kBitmaps) {
      if (with_bitmaps) BitmapsHuman(o, with_bitmaps->bitmaps);
      continue;
    }
    o << indent << f.human << ":";
    switch (f.kind) {
      case ImageInfo::Field::kString: o << " " << f.s; break;
      case ImageInfo::Field::kBool: o << " " << (f.b ? "true" : "false"); break;
      case ImageInfo::Field::kInt: o << " " << f.i; break;
      case ImageInfo::Field::kUint: o << " " << f.u; break;
      case ImageInfo::Field::kList:
      case ImageInfo::Field::kObject:
      case ImageInfo::Field::kBitmaps: break;
    }
    o << "\n";
    if (f.kind == ImageInfo::Field::kObject) FieldsHuman(o, f.list.at(0), indent + "    ", nullptr);
    if (f.kind == ImageInfo::Field::kList)
      for (size_t k = 0; k < f.list.size(); ++k) {
        o << indent << "    [" << k << "]:\n";
        FieldsHuman(o, f.list[k], indent + "        ", nullptr);
      }
  }
}

void BitmapsHuman(std::ostream& o, const std::vector<ImageInfo::Bitmap>& bitmaps) {
  if (bitmaps.empty()) return;
  o << "    bitmaps:\n";
  for (size_t b = 0; b < bitmaps.size(); ++b) {
    const auto& bm = bitmaps[b];
    o << "        [" << b << "]:\n            flags:\n";
    for (size_t k = 0; k < bm.flags.size(); ++k) o << "                [" << k << "]: " << bm.flags[k] << "\n";
    o << "            name: " << bm.name << "\n            granularity: " << bm.granularity << "\n";
  }
}

nlohmann::ordered_json LayerJson(const LayerInfo& li) {
  nlohmann::ordered_json j;
  if (!li.snapshots.empty()) {
    nlohmann::ordered_json arr = nlohmann::ordered_json::array();
    for (const auto& s : li.snapshots) {
      nlohmann::ordered_json o;
      if (s.icount != UINT64_MAX) o["icount"] = s.icount;
      o["vm-clock-nsec"] = s.vm_clock_nsec % 1000000000;
      o["name"] = s.name;
      o["date-sec"] = s.date_sec;
      o["date-nsec"] = s.date_nsec;
      o["vm-clock-sec"] = s.vm_clock_nsec / 1000000000;
      o["id"] = s.id;
      o["vm-state-size"] = s.vm_state_size;
      arr.push_back(o);
    }
    j["snapshots"] = arr;
  }
  if (!li.backing_format.empty()) j["backing-filename-format"] = li.backing_format;
  j["virtual-size"] = li.info.virtual_size;
  j["filename"] = li.filename;
  if (li.info.cluster_size) j["cluster-size"] = li.info.cluster_size;
  j["format"] = li.info.format;
  j["actual-size"] = li.actual_size;
  if (!li.info.specific.empty())
    j["format-specific"] = {{"type", li.info.format}, {"data", FieldsJson(li.info.specific, &li.info)}};
  if (!li.backing_filename.empty()) {
    j["full-backing-filename"] = li.full_backing_filename;
    j["backing-filename"] = li.backing_filename;
  }
  if (li.info.encrypted) j["encrypted"] = true;
  j["dirty-flag"] = li.info.dirty;
  return j;
}

}  // namespace

std::string InfoJson(const std::vector<LayerInfo>& layers, bool as_chain) {
  if (!as_chain && !layers.empty()) return DumpQemuJson(LayerJson(layers[0])) + "\n";
  nlohmann::ordered_json arr = nlohmann::ordered_json::array();
  for (const auto& li : layers) arr.push_back(LayerJson(li));
  return DumpQemuJson(arr) + "\n";
}

std::string InfoErrorJson(const std::string& message) {
  return DumpQemuJson({{"error", message}}) + "\n";
}

std::string InfoHuman(const std::vector<LayerInfo>& layers) {
  std::ostringstream o;
  for (size_t i = 0; i < layers.size(); ++i) {
    const LayerInfo& li = layers[i];
    if (i) o << "\n";
    o << "image: " << li.filename << "\n"
      << "file format: " << li.info.format << "\n"
      << "virtual size: " << HumanSize(li.info.virtual_size) << " (" << li.info.virtual_size << " bytes)\n"
      << "disk size: " << HumanSize(li.actual_size) << "\n";
    if (li.info.encrypted) o << "encrypted: yes\n";
    if (li.info.cluster_size) o << "cluster_size: " << li.info.cluster_size << "\n";
    if (li.info.dirty) o << "cleanly shut down: no\n";
    if (!li.backing_filename.empty()) {
      o << "backing file: " << li.backing_filename;
      if (li.full_backing_filename != li.backing_filename) o << " (actual path: " << li.full_backing_filename << ")";
      o << "\n";
      if (!li.backing_format.empty()) o << "backing file format: " << li.backing_format << "\n";
    }
    if (!li.snapshots.empty()) o << "Snapshot list:\n" << SnapshotTable(li.snapshots);
    if (!li.info.specific.empty()) {
      o << "Format specific information:\n";
      FieldsHuman(o, li.info.specific, "    ", &li.info);
    }
  }
  return o.str();
}

}  // namespace imgfs::ops
