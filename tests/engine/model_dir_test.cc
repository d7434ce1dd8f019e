// LoadModelDir on the exported tiny model (tests/engine/test_data.h; made by a
// CTest setup test) and on damaged copies of it in a temporary directory.
#include "engine/model_dir.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "absl/status/status.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/engine/test_data.h"

namespace florence::engine {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string ExportedModelDir() { return testdata::TestModelDir(); }

class ModelDirTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string pattern =
        (fs::path(::testing::TempDir()) / "model_dir_test_XXXXXX").string();
    ASSERT_NE(mkdtemp(pattern.data()), nullptr);
    temp_ = pattern;
  }
  // std::filesystem::copy/remove_all here double as a check of the link order
  // in cmake/FlorenceTorch.cmake: bound to libtorch.so's copies, they crash.
  void TearDown() override {
    if (!temp_.empty()) fs::remove_all(temp_);
  }

  // A fresh copy of the exported model directory that the test may damage.
  std::string CopyOfModel() {
    const fs::path copy = temp_ / "model";
    fs::copy(ExportedModelDir(), copy, fs::copy_options::recursive);
    return copy.string();
  }

  fs::path temp_;
};

void WriteFile(const fs::path& path, const std::string& bytes) {
  std::ofstream(path, std::ios::binary | std::ios::trunc) << bytes;
}

TEST_F(ModelDirTest, Sha256OfKnownBytes) {
  WriteFile(temp_ / "abc", "abc");  // FIPS 180-2 test vector
  const absl::StatusOr<std::string> sha = Sha256File((temp_ / "abc").string());
  ASSERT_TRUE(sha.ok()) << sha.status();
  EXPECT_EQ(*sha,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

TEST_F(ModelDirTest, LoadsExportedTinyModel) {
  const absl::StatusOr<ModelDir> dir = LoadModelDir(ExportedModelDir());
  ASSERT_TRUE(dir.ok()) << dir.status();
  EXPECT_EQ(dir->interface_version, kInterfaceVersion);
  EXPECT_EQ(dir->dtype, "float32");
  EXPECT_EQ(fs::path(dir->model_path).filename(), "model.ts");
  EXPECT_EQ(fs::path(dir->tokenizer_path).filename(), "tokenizer.json");
  EXPECT_EQ(dir->num_image_tokens, 577);
  EXPECT_EQ(dir->decoder.layers, 2);
  EXPECT_EQ(dir->decoder.heads, 4);
  EXPECT_EQ(dir->decoder.head_dim, 16);
  EXPECT_EQ(dir->decoder.max_positions, 1024);
  EXPECT_EQ(dir->tokens.eos, 2);
  EXPECT_EQ(dir->tokens.image, 51289);
  EXPECT_EQ(dir->tokens.loc_first, 50269);
  EXPECT_EQ(dir->preprocess.size, 768);
  EXPECT_DOUBLE_EQ(dir->preprocess.mean[0], 0.485);
  EXPECT_DOUBLE_EQ(dir->preprocess.std[2], 0.225);
  EXPECT_EQ(dir->generation.num_beams, 3);
  EXPECT_EQ(dir->generation.decoder_start_token_id, 2);
}

TEST_F(ModelDirTest, FlippedByteInModelIsDataLoss) {
  const std::string dir = CopyOfModel();
  {
    std::fstream model(fs::path(dir) / "model.ts",
                       std::ios::in | std::ios::out | std::ios::binary);
    model.seekg(1000);
    const char byte = static_cast<char>(model.get());
    model.seekp(1000);
    model.put(static_cast<char>(byte ^ 0x01));
  }
  const absl::StatusOr<ModelDir> loaded = LoadModelDir(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss)
      << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("model.ts"));
}

TEST_F(ModelDirTest, TruncatedTokenizerIsDataLoss) {
  const std::string dir = CopyOfModel();
  fs::resize_file(fs::path(dir) / "tokenizer.json", 10);
  const absl::StatusOr<ModelDir> loaded = LoadModelDir(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss)
      << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("tokenizer.json"));
}

TEST_F(ModelDirTest, MissingConfigIsNotFound) {
  const std::string dir = CopyOfModel();
  fs::remove(fs::path(dir) / "config.json");
  const absl::StatusOr<ModelDir> loaded = LoadModelDir(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound)
      << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("config.json"));
}

TEST_F(ModelDirTest, MissingDirectoryIsNotFound) {
  const absl::StatusOr<ModelDir> loaded =
      LoadModelDir((temp_ / "nope").string());
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound)
      << loaded.status();
}

TEST_F(ModelDirTest, ManifestMustCoverTheModelFile) {
  const std::string dir = CopyOfModel();
  const fs::path manifest_path = fs::path(dir) / "manifest.json";
  nlohmann::json manifest = nlohmann::json::parse(std::ifstream(manifest_path));
  manifest["files"].erase("model.ts");
  WriteFile(manifest_path, manifest.dump());
  const absl::StatusOr<ModelDir> loaded = LoadModelDir(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument)
      << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("model.ts"));
}

TEST_F(ModelDirTest, ManifestEntryOutsideDirectoryIsInvalid) {
  const std::string dir = CopyOfModel();
  const fs::path manifest_path = fs::path(dir) / "manifest.json";
  nlohmann::json manifest = nlohmann::json::parse(std::ifstream(manifest_path));
  manifest["files"]["../escape"] = {{"sha256", std::string(64, '0')},
                                    {"bytes", 0}};
  WriteFile(manifest_path, manifest.dump());
  const absl::StatusOr<ModelDir> loaded = LoadModelDir(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument)
      << loaded.status();
}

// Rewrites config.json of the copy at `dir` with `edit` and records its new
// checksum and size in manifest.json, as an export would have written them.
template <typename Edit>
void RewriteConfig(const std::string& dir, Edit edit) {
  const fs::path config_path = fs::path(dir) / "config.json";
  const fs::path manifest_path = fs::path(dir) / "manifest.json";
  nlohmann::json config = nlohmann::json::parse(std::ifstream(config_path));
  edit(config);
  WriteFile(config_path, config.dump());
  nlohmann::json manifest = nlohmann::json::parse(std::ifstream(manifest_path));
  const absl::StatusOr<std::string> sha = Sha256File(config_path.string());
  ASSERT_TRUE(sha.ok()) << sha.status();
  manifest["files"]["config.json"] = {
      {"sha256", *sha}, {"bytes", fs::file_size(config_path)}};
  WriteFile(manifest_path, manifest.dump());
}

TEST_F(ModelDirTest, VisionDtypeIsReadAndDefaultsToTheWeights) {
  const absl::StatusOr<ModelDir> exported = LoadModelDir(ExportedModelDir());
  ASSERT_TRUE(exported.ok()) << exported.status();
  EXPECT_EQ(exported->vision_dtype, "float32");

  const std::string dir = CopyOfModel();
  RewriteConfig(dir, [](nlohmann::json& c) {
    c["dtype"] = "int8";
    c["vision_dtype"] = "bfloat16";
  });
  absl::StatusOr<ModelDir> loaded = LoadModelDir(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->dtype, "int8");
  EXPECT_EQ(loaded->vision_dtype, "bfloat16");

  // Exports from before --vision-dtype: the weights' float dtype, float32
  // beside int8 weights.
  RewriteConfig(dir, [](nlohmann::json& c) { c.erase("vision_dtype"); });
  loaded = LoadModelDir(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->vision_dtype, "float32");
  RewriteConfig(dir, [](nlohmann::json& c) { c["dtype"] = "bfloat16"; });
  loaded = LoadModelDir(dir);
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ(loaded->vision_dtype, "bfloat16");
}

TEST_F(ModelDirTest, VisionDtypeMustBeAFloatDtype) {
  const std::string dir = CopyOfModel();
  RewriteConfig(dir, [](nlohmann::json& c) { c["vision_dtype"] = "int8"; });
  const absl::StatusOr<ModelDir> loaded = LoadModelDir(dir);
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kInvalidArgument)
      << loaded.status();
  EXPECT_THAT(loaded.status().message(), HasSubstr("vision_dtype \"int8\""));
}

}  // namespace
}  // namespace florence::engine
