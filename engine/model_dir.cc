#include "engine/model_dir.h"

#include <openssl/evp.h>

#include <array>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "engine/status_macros.h"
#include "nlohmann/json.hpp"

namespace florence::engine {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

constexpr char kConfigFile[] = "config.json";
constexpr char kManifestFile[] = "manifest.json";
constexpr char kTokenizerFile[] = "tokenizer.json";

struct FileCloser {
  void operator()(std::FILE* f) const { std::fclose(f); }
};
using File = std::unique_ptr<std::FILE, FileCloser>;

absl::StatusOr<File> OpenForReading(const std::string& path) {
  File file(std::fopen(path.c_str(), "rb"));
  if (file == nullptr) {
    const int err = errno;
    if (err == ENOENT) {
      return absl::NotFoundError(absl::StrCat(path, " not found"));
    }
    return absl::ErrnoToStatus(err, absl::StrCat("cannot open ", path));
  }
  return file;
}

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  FLORENCE_ASSIGN_OR_RETURN(File file, OpenForReading(path));
  std::string text;
  char buffer[1 << 16];
  size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file.get())) > 0) {
    text.append(buffer, n);
  }
  if (std::ferror(file.get())) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
  }
  return text;
}

absl::StatusOr<Json> ParseJson(const std::string& path) {
  FLORENCE_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  Json json = Json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(path, " is not a JSON object"));
  }
  return json;
}

bool IsInteger(const Json& j) { return j.is_number_integer(); }
bool IsNumber(const Json& j) { return j.is_number(); }
bool IsBoolean(const Json& j) { return j.is_boolean(); }
bool IsString(const Json& j) { return j.is_string(); }
bool IsArray(const Json& j) { return j.is_array(); }

// Typed access to dotted paths ("decoder.heads") of one JSON document. Keeps
// the first error and returns zero values after it, so a parser reads all
// fields straight through and checks status() once.
class JsonFields {
 public:
  JsonFields(const Json& root, std::string file)
      : root_(root), file_(std::move(file)) {}

  int64_t Int(absl::string_view path) {
    const Json* j = Find(path, IsInteger, "an integer");
    return j ? j->get<int64_t>() : 0;
  }
  double Number(absl::string_view path) {
    const Json* j = Find(path, IsNumber, "a number");
    return j ? j->get<double>() : 0.0;
  }
  bool Bool(absl::string_view path) {
    const Json* j = Find(path, IsBoolean, "a boolean");
    return j ? j->get<bool>() : false;
  }
  std::string String(absl::string_view path) {
    const Json* j = Find(path, IsString, "a string");
    return j ? j->get<std::string>() : std::string();
  }
  std::array<double, 3> Triple(absl::string_view path) {
    std::array<double, 3> out = {};
    const Json* j = Find(path, IsArray, "an array of 3 numbers");
    if (j == nullptr) return out;
    if (j->size() != 3) {
      Fail(path, "an array of 3 numbers");
      return out;
    }
    for (size_t i = 0; i < 3; ++i) {
      if (!(*j)[i].is_number()) {
        Fail(path, "an array of 3 numbers");
        return out;
      }
      out[i] = (*j)[i].get<double>();
    }
    return out;
  }

  const absl::Status& status() const { return status_; }

 private:
  const Json* Find(absl::string_view path, bool (*has_type)(const Json&),
                   const char* type_name) {
    if (!status_.ok()) return nullptr;
    const Json* node = &root_;
    for (absl::string_view key : absl::StrSplit(path, '.')) {
      if (!node->is_object()) {
        Fail(path, "an object member");
        return nullptr;
      }
      auto it = node->find(std::string(key));
      if (it == node->end()) {
        status_ = absl::InvalidArgumentError(
            absl::StrCat(file_, ": missing key \"", path, "\""));
        return nullptr;
      }
      node = &*it;
    }
    if (!has_type(*node)) {
      Fail(path, type_name);
      return nullptr;
    }
    return node;
  }

  void Fail(absl::string_view path, absl::string_view expected) {
    if (status_.ok()) {
      status_ = absl::InvalidArgumentError(
          absl::StrCat(file_, ": \"", path, "\" must be ", expected));
    }
  }

  const Json& root_;
  const std::string file_;
  absl::Status status_;
};

// A manifest entry must name a file directly inside the model directory.
bool IsPlainFileName(const std::string& name) {
  return !name.empty() && name != "." && name != ".." &&
         name.find('/') == std::string::npos &&
         name.find('\\') == std::string::npos;
}

// Checks every file manifest.json lists: present, same size, same sha256.
absl::Status VerifyManifest(const fs::path& dir, const Json& manifest,
                            const std::string& manifest_path) {
  auto files = manifest.find("files");
  if (files == manifest.end() || !files->is_object() || files->empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat(manifest_path, ": \"files\" must be a non-empty object"));
  }
  for (const auto& [name, entry] : files->items()) {
    if (!IsPlainFileName(name)) {
      return absl::InvalidArgumentError(
          absl::StrCat(manifest_path, ": \"", name,
                       "\" is not a file name inside the model directory"));
    }
    JsonFields fields(entry, absl::StrCat(manifest_path, " files.", name));
    const std::string want_sha = fields.String("sha256");
    const int64_t want_bytes = fields.Int("bytes");
    FLORENCE_RETURN_IF_ERROR(fields.status());

    const std::string path = (dir / name).string();
    std::error_code ec;
    const uintmax_t bytes = fs::file_size(path, ec);
    if (ec == std::errc::no_such_file_or_directory) {
      return absl::NotFoundError(absl::StrCat(
          path, " is listed in ", kManifestFile, " but does not exist"));
    }
    if (ec) {
      return absl::ErrnoToStatus(ec.value(),
                                 absl::StrCat("cannot stat ", path));
    }
    if (static_cast<int64_t>(bytes) != want_bytes) {
      return absl::DataLossError(absl::StrCat(
          path, " has ", bytes, " bytes, ", kManifestFile, " says ", want_bytes,
          "; the file is truncated or was replaced"));
    }
    FLORENCE_ASSIGN_OR_RETURN(const std::string sha, Sha256File(path));
    if (sha != want_sha) {
      return absl::DataLossError(absl::StrCat(
          path, ": sha256 ", sha, " does not match ", kManifestFile, " (",
          want_sha, "); the file is corrupt or was modified after export"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> Sha256File(const std::string& path) {
  FLORENCE_ASSIGN_OR_RETURN(File file, OpenForReading(path));
  std::unique_ptr<EVP_MD_CTX, decltype(&EVP_MD_CTX_free)> ctx(EVP_MD_CTX_new(),
                                                              &EVP_MD_CTX_free);
  if (ctx == nullptr ||
      EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) != 1) {
    return absl::InternalError("OpenSSL: cannot initialise SHA-256");
  }
  std::vector<unsigned char> buffer(1 << 20);
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), file.get())) > 0) {
    if (EVP_DigestUpdate(ctx.get(), buffer.data(), n) != 1) {
      return absl::InternalError("OpenSSL: SHA-256 failed");
    }
  }
  if (std::ferror(file.get())) {
    return absl::ErrnoToStatus(errno, absl::StrCat("cannot read ", path));
  }
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_len = 0;
  if (EVP_DigestFinal_ex(ctx.get(), digest, &digest_len) != 1) {
    return absl::InternalError("OpenSSL: SHA-256 failed");
  }
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * digest_len);
  for (unsigned int i = 0; i < digest_len; ++i) {
    hex.push_back(kHex[digest[i] >> 4]);
    hex.push_back(kHex[digest[i] & 0xf]);
  }
  return hex;
}

absl::StatusOr<ModelDir> LoadModelDir(const std::string& dir) {
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_directory(root, ec)) {
    return absl::NotFoundError(absl::StrCat(
        "model directory ", dir, " does not exist or is not a directory"));
  }
  const std::string config_path = (root / kConfigFile).string();
  const std::string manifest_path = (root / kManifestFile).string();

  // Existence first (a clear NotFound), then integrity, then meaning.
  FLORENCE_ASSIGN_OR_RETURN(const Json config, ParseJson(config_path));
  FLORENCE_ASSIGN_OR_RETURN(const Json manifest, ParseJson(manifest_path));
  FLORENCE_RETURN_IF_ERROR(VerifyManifest(root, manifest, manifest_path));

  ModelDir out;
  out.dir = dir;
  JsonFields f(config, config_path);
  const std::string model_file = f.String("model_file");
  out.dtype = f.String("dtype");
  // Optional (exports before --vision-dtype): the weights' float dtype.
  out.vision_dtype = config.contains("vision_dtype") ? f.String("vision_dtype")
                     : out.dtype == "int8"           ? "float32"
                                                     : out.dtype;
  out.interface_version = static_cast<int>(f.Int("interface_version"));
  out.num_image_tokens = f.Int("num_image_tokens");

  out.decoder.layers = f.Int("decoder.layers");
  out.decoder.heads = f.Int("decoder.heads");
  out.decoder.head_dim = f.Int("decoder.head_dim");
  out.decoder.max_positions = f.Int("decoder.max_positions");

  out.tokens.bos = f.Int("tokens.bos");
  out.tokens.pad = f.Int("tokens.pad");
  out.tokens.eos = f.Int("tokens.eos");
  out.tokens.unk = f.Int("tokens.unk");
  out.tokens.image = f.Int("tokens.image");
  out.tokens.loc_first = f.Int("tokens.loc_first");
  out.tokens.loc_count = f.Int("tokens.loc_count");
  out.tokens.real_vocab_size = f.Int("tokens.real_vocab_size");

  out.preprocess.size = f.Int("preprocess.size");
  out.preprocess.resample = f.String("preprocess.resample");
  out.preprocess.rescale_factor = f.Number("preprocess.rescale_factor");
  out.preprocess.mean = f.Triple("preprocess.mean");
  out.preprocess.std = f.Triple("preprocess.std");

  out.generation.num_beams = f.Int("generation.num_beams");
  out.generation.no_repeat_ngram_size =
      f.Int("generation.no_repeat_ngram_size");
  out.generation.early_stopping = f.Bool("generation.early_stopping");
  out.generation.length_penalty = f.Number("generation.length_penalty");
  out.generation.max_new_tokens = f.Int("generation.max_new_tokens");
  out.generation.decoder_start_token_id =
      f.Int("generation.decoder_start_token_id");
  out.generation.forced_bos_token_id = f.Int("generation.forced_bos_token_id");
  out.generation.forced_eos_token_id = f.Int("generation.forced_eos_token_id");
  FLORENCE_RETURN_IF_ERROR(f.status());

  if (out.interface_version != kInterfaceVersion) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": interface_version ", out.interface_version,
        " is not supported (this engine drives ", kInterfaceVersion,
        "); re-export with a matching tools/florence2_export.py"));
  }
  if (out.dtype != "float32" && out.dtype != "float16" &&
      out.dtype != "bfloat16" && out.dtype != "int8") {
    return absl::InvalidArgumentError(
        absl::StrCat(config_path, ": unknown dtype \"", out.dtype, "\""));
  }
  if (out.vision_dtype != "float32" && out.vision_dtype != "float16" &&
      out.vision_dtype != "bfloat16") {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": unknown vision_dtype \"", out.vision_dtype, "\""));
  }
  if (out.decoder.layers <= 0 || out.decoder.heads <= 0 ||
      out.decoder.head_dim <= 0 || out.decoder.max_positions <= 0 ||
      out.num_image_tokens <= 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        config_path, ": decoder sizes and num_image_tokens must be positive"));
  }
  // Only checksummed files may be used: the manifest must cover everything the
  // engine reads.
  const Json& files = manifest["files"];
  for (const std::string& needed :
       {std::string(kConfigFile), std::string(kTokenizerFile), model_file}) {
    if (!IsPlainFileName(needed) || !files.contains(needed)) {
      return absl::InvalidArgumentError(
          absl::StrCat(manifest_path, " does not list \"", needed,
                       "\"; every file the engine reads must be "
                       "checksummed"));
    }
  }
  out.model_path = (root / model_file).string();
  out.tokenizer_path = (root / kTokenizerFile).string();
  return out;
}

}  // namespace florence::engine
