#include "engine/aoti_model.h"

#include <ATen/Functions.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>
#include <torch/cuda.h>

#include <exception>
#include <filesystem>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "engine/status_macros.h"
#include "engine/torch_guard.h"

namespace florence::engine {
namespace {

namespace fs = std::filesystem;
using Loader = torch::inductor::AOTIModelPackageLoader;
using Metadata = std::unordered_map<std::string, std::string>;

constexpr char kFormat[] = "florence-serve/aoti";

std::string Describe(const at::Tensor& t) {
  return absl::StrCat("sizes [", absl::StrJoin(t.sizes(), ","), "], strides [",
                      absl::StrJoin(t.strides(), ","), "], storage offset ",
                      t.storage_offset());
}

absl::Status CheckMetadata(const std::string& path, const Metadata& meta,
                           const std::string& method, const ModelDir& dir,
                           const c10::Device& device) {
  auto get = [&](const std::string& key) -> std::string {
    auto it = meta.find(key);
    return it == meta.end() ? std::string("<missing>") : it->second;
  };
  auto expect = [&](const std::string& key,
                    const std::string& want) -> absl::Status {
    const std::string got = get(key);
    if (got == want) return absl::OkStatus();
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": metadata ", key, " is \"", got, "\", expected \"", want,
        "\"; re-export with tools/florence2_export_aoti.py --model-dir ",
        dir.dir));
  };
  FLORENCE_RETURN_IF_ERROR(expect("florence.format", kFormat));
  FLORENCE_RETURN_IF_ERROR(expect("florence.method", method));
  FLORENCE_RETURN_IF_ERROR(
      expect("florence.interface_version", std::to_string(kInterfaceVersion)));
  FLORENCE_RETURN_IF_ERROR(expect("florence.dtype", "float32"));
  FLORENCE_RETURN_IF_ERROR(expect("florence.decoder_layers",
                                  std::to_string(dir.decoder.layers)));
  FLORENCE_RETURN_IF_ERROR(
      expect("florence.decoder_heads", std::to_string(dir.decoder.heads)));
  FLORENCE_RETURN_IF_ERROR(
      expect("florence.head_dim", std::to_string(dir.decoder.head_dim)));
  if (method == "decode_step") {
    FLORENCE_RETURN_IF_ERROR(
        expect("florence.decode_layout", kAotiDecodeLayout));
  }
  const std::string compiled_for = get("AOTI_DEVICE_KEY");
  if (compiled_for != c10::DeviceTypeName(device.type(), /*lower_case=*/true)) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, " was compiled for device \"", compiled_for, "\", not ",
        device.str(), "; serve it on ", compiled_for,
        " or use --backend torchscript"));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<Loader>> LoadPackage(
    const std::string& path, const std::string& method, const ModelDir& dir,
    const c10::Device& device) {
  Metadata meta;
  try {
    meta = Loader::load_metadata_from_package(path, "model");
  } catch (const std::exception& e) {
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot read ", path, ": ",
        c10_error ? c10_error->what_without_backtrace() : e.what()));
  }
  FLORENCE_RETURN_IF_ERROR(CheckMetadata(path, meta, method, dir, device));
  try {
    return std::make_unique<Loader>(
        path, "model", /*run_single_threaded=*/false, /*num_runners=*/1,
        device.is_cuda() ? device.index() : c10::DeviceIndex{-1});
  } catch (const std::exception& e) {
    const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
    return absl::InvalidArgumentError(absl::StrCat(
        "cannot load ", path, " (it extracts a shared library under TMPDIR, "
        "which must be writable): ",
        c10_error ? c10_error->what_without_backtrace() : e.what()));
  }
}

// Read-only inputs: contiguous (a no-op when they are) in `dtype` on `device`.
at::Tensor Dense(const at::Tensor& t, at::ScalarType dtype,
                 const c10::Device& device) {
  return t.to(device, dtype).contiguous();
}

}  // namespace

absl::StatusOr<at::Tensor> PoolBase(const at::Tensor& t, const char* name) {
  if (t.dim() != 5) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode_step: ", name, " must be 5-d [L, rows, H, len, hd], got ",
        Describe(t)));
  }
  if (t.is_contiguous()) return t;
  const auto sz = t.sizes();
  const auto st = t.strides();
  const int64_t layers = sz[0], rows = sz[1], heads = sz[2], len = sz[3],
                hd = sz[4];
  bool ok = t.storage_offset() == 0 && hd > 0 && st[4] == 1 && st[3] == hd &&
            st[2] % hd == 0 && st[2] / hd >= len && st[1] == heads * st[2];
  int64_t pool_rows = rows;
  if (ok && layers > 1) {
    ok = st[1] > 0 && st[0] % st[1] == 0 && st[0] / st[1] >= rows;
    if (ok) pool_rows = st[0] / st[1];
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode_step: ", name, " (", Describe(t),
        ") is neither contiguous nor the first rows and positions of a "
        "contiguous [L, R, H, S, hd] tensor; the AOTI packages read inputs "
        "through contiguous strides only"));
  }
  const std::vector<int64_t> shape = {layers, pool_rows, heads, st[2] / hd, hd};
  const std::vector<int64_t> strides = {pool_rows * st[1], st[1], st[2], hd, 1};
  const int64_t need =
      layers * pool_rows * st[1] * static_cast<int64_t>(t.element_size());
  if (static_cast<int64_t>(t.storage().nbytes()) < need) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode_step: ", name, " (", Describe(t), ") has a storage of ",
        t.storage().nbytes(), " bytes, smaller than the ", need,
        " its strides imply"));
  }
  return t.as_strided(shape, strides, 0);
}

AotiModel::AotiModel(c10::Device device, const DecoderConfig& decoder)
    : device_(device), decoder_(decoder) {}

AotiModel::~AotiModel() = default;

absl::StatusOr<std::unique_ptr<AotiModel>> AotiModel::Create(
    const ModelDir& dir, const Options& options) {
  FLORENCE_ASSIGN_OR_RETURN(c10::Device device, ParseDevice(options.device));
  if (device.is_cuda() && !torch::cuda::is_available()) {
    return absl::FailedPreconditionError(absl::StrCat(
        "device ", options.device, " requested but CUDA is not available"));
  }
  if (!device.is_cpu() && !device.is_cuda()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "device ", options.device, ": only cpu and cuda are supported"));
  }
  if (device.is_cuda() && !device.has_index()) device = c10::Device(c10::kCUDA, 0);
  const std::string export_cmd = absl::StrCat(
      "tools/florence2_export_aoti.py --model-dir ", dir.dir);
  if (dir.dtype != "float32") {
    return absl::InvalidArgumentError(absl::StrCat(
        dir.dir, " holds ", dir.dtype,
        " weights; the AOTI backend runs float32 exports only (use --backend "
        "torchscript)"));
  }
  const fs::path pkg_dir = options.package_dir.empty()
                               ? fs::path(dir.dir) / kAotiSubdir
                               : fs::path(options.package_dir);
  std::error_code ec;
  if (!fs::is_directory(pkg_dir, ec)) {
    return absl::NotFoundError(absl::StrCat(
        "the AOTI backend needs the packages in ", pkg_dir.string(),
        ", which does not exist; compile them with ", export_cmd));
  }
  if (options.num_threads > 0) at::set_num_threads(options.num_threads);

  std::unique_ptr<AotiModel> model(new AotiModel(device, dir.decoder));
  const std::pair<const char*, std::unique_ptr<Loader>*> packages[] = {
      {"image_features", &model->image_features_},
      {"encode", &model->encode_},
      {"cross_kv", &model->cross_kv_},
      {"decode_step", &model->decode_step_}};
  for (const auto& [method, slot] : packages) {
    const fs::path path = pkg_dir / absl::StrCat(method, ".pt2");
    if (!fs::is_regular_file(path, ec)) {
      return absl::NotFoundError(absl::StrCat(
          path.string(), " does not exist; compile the packages with ",
          export_cmd));
    }
    FLORENCE_ASSIGN_OR_RETURN(*slot,
                              LoadPackage(path.string(), method, dir, device));
  }
  return model;
}

absl::StatusOr<at::Tensor> AotiModel::ImageFeatures(
    const at::Tensor& pixel_values) {
  return Guarded("image_features", [&] {
    return image_features_->run({Dense(pixel_values, at::kFloat, device_)})
        .at(0);
  });
}

absl::StatusOr<at::Tensor> AotiModel::Encode(const at::Tensor& image_features,
                                             const at::Tensor& input_ids,
                                             const at::Tensor& attention_mask) {
  return Guarded("encode", [&] {
    return encode_
        ->run({Dense(image_features, at::kFloat, device_),
               Dense(input_ids, at::kLong, device_),
               Dense(attention_mask, at::kLong, device_)})
        .at(0);
  });
}

absl::StatusOr<KvPair> AotiModel::CrossKv(const at::Tensor& encoder_hidden) {
  return Guarded("cross_kv", [&] {
    std::vector<at::Tensor> kv =
        cross_kv_->run({Dense(encoder_hidden, at::kFloat, device_)});
    return KvPair{kv.at(0), kv.at(1)};
  });
}

absl::StatusOr<KvPair> AotiModel::EmptySelfCache(int64_t batch,
                                                 int64_t max_len) {
  return Guarded("empty_self_cache", [&] {
    const std::vector<int64_t> shape = {decoder_.layers, batch, decoder_.heads,
                                        max_len, decoder_.head_dim};
    const auto opts = at::TensorOptions().dtype(at::kFloat).device(device_);
    return KvPair{at::zeros(shape, opts), at::zeros(shape, opts)};
  });
}

absl::StatusOr<at::Tensor> AotiModel::DecodeStep(
    const at::Tensor& input_ids, const at::Tensor& positions,
    KvPair* self_cache, const KvPair& cross, const at::Tensor& cross_mask,
    const at::Tensor& cross_rows) {
  if (self_cache == nullptr) {
    return absl::InvalidArgumentError("decode_step: self_cache is null");
  }
  const at::Tensor& k = self_cache->k;
  const at::Tensor& v = self_cache->v;
  // The graph narrows to input_ids' rows, cross_mask's [G, c] and self_len's
  // s; the views must say the same, and be written / read where they live.
  for (const auto& [t, name] :
       {std::pair{&k, "self_k"}, {&v, "self_v"}, {&cross.k, "cross_k"},
        {&cross.v, "cross_v"}}) {
    if (t->scalar_type() != at::kFloat || t->device() != device_) {
      return absl::InvalidArgumentError(absl::StrCat(
          "decode_step: ", name, " must be float32 on ", device_.str(),
          ", got ", c10::toString(t->scalar_type()), " on ",
          t->device().str()));
    }
  }
  if (k.dim() != 5 || v.sizes() != k.sizes() || cross.k.dim() != 5 ||
      cross.v.sizes() != cross.k.sizes() || cross_mask.dim() != 2 ||
      input_ids.dim() != 1 || k.size(1) != input_ids.size(0) ||
      cross_mask.size(0) != cross.k.size(1) ||
      cross_mask.size(1) != cross.k.size(3)) {
    return absl::InvalidArgumentError(absl::StrCat(
        "decode_step: inconsistent sizes: input_ids [",
        absl::StrJoin(input_ids.sizes(), ","), "], self_k [",
        absl::StrJoin(k.sizes(), ","), "], self_v [",
        absl::StrJoin(v.sizes(), ","), "], cross_k [",
        absl::StrJoin(cross.k.sizes(), ","), "], cross_mask [",
        absl::StrJoin(cross_mask.sizes(), ","), "]"));
  }
  c10::InferenceMode guard;  // the bases are views of (inference) cache tensors
  FLORENCE_ASSIGN_OR_RETURN(at::Tensor k_base, PoolBase(k, "self_k"));
  FLORENCE_ASSIGN_OR_RETURN(at::Tensor v_base, PoolBase(v, "self_v"));
  FLORENCE_ASSIGN_OR_RETURN(at::Tensor ck_base, PoolBase(cross.k, "cross_k"));
  FLORENCE_ASSIGN_OR_RETURN(at::Tensor cv_base, PoolBase(cross.v, "cross_v"));
  return Guarded("decode_step", [&] {
    const auto bytes = at::TensorOptions().dtype(at::kByte).device(device_);
    return decode_step_
        ->run({Dense(input_ids, at::kLong, device_),
               Dense(positions, at::kLong, device_), k_base, v_base, ck_base,
               cv_base, Dense(cross_mask, at::kLong, device_),
               Dense(cross_rows, at::kLong, device_),
               at::empty({k.size(3)}, bytes)})
        .at(0);
  });
}

}  // namespace florence::engine
