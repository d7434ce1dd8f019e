// TorchScriptModel on the exported tiny model against reference values that
// tools/make_smoke_fixture.py computed in Python from the same model.ts: image
// features -> encode -> cross K/V -> two decode steps. Paths:
// tests/engine/test_data.h (the model directory, and a TorchScript container
// whose buffers hold the Python inputs and outputs).
#include <ATen/ATen.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/cuda.h>

#include <exception>
#include <map>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "engine/model_backend.h"
#include "engine/model_dir.h"
#include "engine/torchscript_model.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/engine/test_data.h"

namespace florence::engine {
namespace {

using ::testing::HasSubstr;

constexpr double kTolerance = 1e-4;  // max abs difference, fp32 on the same CPU

// The checked model directory and the reference tensors by name, loaded once
// for the suite.
struct SuiteData {
  ModelDir dir;
  std::map<std::string, at::Tensor> expected;
};

absl::StatusOr<SuiteData> LoadSuiteData() {
  SuiteData data;
  absl::StatusOr<ModelDir> dir =
      LoadModelDir(testdata::TestModelDir());  // verifies checksums
  if (!dir.ok()) return dir.status();
  data.dir = *std::move(dir);

  const std::string fixture_path = testdata::TestSmokeFixture();
  torch::jit::Module fixture;
  try {
    fixture = torch::jit::load(fixture_path);
  } catch (const std::exception& e) {
    return absl::NotFoundError(
        absl::StrCat("cannot load ", fixture_path, ": ", e.what()));
  }
  for (const auto& buffer : fixture.named_buffers()) {
    data.expected[buffer.name] = buffer.value;
  }
  // The reference values are only meaningful for the artefact they were
  // computed from.
  absl::StatusOr<std::string> sha = Sha256File(data.dir.model_path);
  if (!sha.ok()) return sha.status();
  if (fixture.attr("model_sha256").toStringRef() != *sha) {
    return absl::FailedPreconditionError(
        absl::StrCat(fixture_path, " was made from another model.ts; rerun ",
                     "tools/make_smoke_fixture.py"));
  }
  return data;
}

class TorchScriptSmokeTest : public ::testing::Test {
 protected:
  // Failures are reported from SetUp: a failed ASSERT in SetUpTestSuite makes
  // gtest report the tests as skipped, which ctest counts as passed.
  static void SetUpTestSuite() {
    data_ = new absl::StatusOr<SuiteData>(LoadSuiteData());
  }
  static void TearDownTestSuite() {
    delete data_;
    data_ = nullptr;
  }

  void SetUp() override {
    ASSERT_TRUE(data_->ok()) << data_->status();
    dir_ = &(*data_)->dir;
    absl::StatusOr<std::unique_ptr<TorchScriptModel>> model =
        TorchScriptModel::Create(*dir_, {"cpu", 0});
    ASSERT_TRUE(model.ok()) << model.status();
    model_ = *std::move(model);
  }

  static const at::Tensor& Expected(const std::string& name) {
    const auto& expected = (*data_)->expected;
    auto it = expected.find(name);
    if (it == expected.end()) {
      ADD_FAILURE() << "fixture has no buffer " << name;
      static const at::Tensor kEmpty;
      return kEmpty;
    }
    return it->second;
  }

  static void CheckTwoSteps(TorchScriptModel* model);

  static absl::StatusOr<SuiteData>*
      data_;  // owned; read-only between SetUpTestSuite and TearDownTestSuite
  const ModelDir* dir_ = nullptr;  // points into *data_
  std::unique_ptr<TorchScriptModel> model_;
};

absl::StatusOr<SuiteData>* TorchScriptSmokeTest::data_ = nullptr;

// Same shape and max |got - want| <= kTolerance.
void ExpectClose(const absl::StatusOr<at::Tensor>& got, const at::Tensor& want,
                 const std::string& what) {
  ASSERT_TRUE(got.ok()) << what << ": " << got.status();
  ASSERT_TRUE(want.defined()) << what;
  ASSERT_EQ(got->sizes(), want.sizes()) << what;
  const double max_diff = (got->to(at::kCPU, at::kFloat) - want.to(at::kFloat))
                              .abs()
                              .max()
                              .item<double>();
  EXPECT_LE(max_diff, kTolerance) << what;
}

// image features -> encode -> cross K/V -> two decode steps through `model`,
// each output against the Python reference.
void TorchScriptSmokeTest::CheckTwoSteps(TorchScriptModel* model) {
  const absl::StatusOr<at::Tensor> features =
      model->ImageFeatures(Expected("pixel_values"));
  ASSERT_NO_FATAL_FAILURE(
      ExpectClose(features, Expected("image_features"), "image_features"));

  const at::Tensor& mask = Expected("attention_mask");
  const absl::StatusOr<at::Tensor> encoded =
      model->Encode(*features, Expected("input_ids"), mask);
  ASSERT_NO_FATAL_FAILURE(
      ExpectClose(encoded, Expected("encoder_hidden"), "encoder_hidden"));

  const absl::StatusOr<KvPair> cross = model->CrossKv(*encoded);
  ASSERT_TRUE(cross.ok()) << cross.status();
  ASSERT_NO_FATAL_FAILURE(
      ExpectClose(cross->k, Expected("cross_k"), "cross_k"));
  ASSERT_NO_FATAL_FAILURE(
      ExpectClose(cross->v, Expected("cross_v"), "cross_v"));

  const int64_t cache_len = Expected("self_k").size(3);
  absl::StatusOr<KvPair> cache = model->EmptySelfCache(1, cache_len);
  ASSERT_TRUE(cache.ok()) << cache.status();
  const at::Tensor step_ids = Expected("step_ids");
  for (int64_t pos = 0; pos < 2;
       ++pos) {  // token 2 (</s>, decoder start) at 0, then token 0 (<s>) at 1
    const std::string name = absl::StrCat("logits_step", pos);
    const absl::StatusOr<at::Tensor> logits = model->DecodeStep(
        step_ids.slice(0, pos, pos + 1), at::full({1}, pos, at::kLong), &*cache,
        *cross, mask, at::zeros({1}, at::kLong));
    ASSERT_NO_FATAL_FAILURE(ExpectClose(logits, Expected(name), name));
  }

  // decode_step wrote positions 0 and 1 of the caller's cache in place and left
  // the rest untouched.
  for (const at::Tensor& c : {cache->k, cache->v}) {
    EXPECT_GT(c.select(3, 0).abs().sum().item<double>(), 0.0);
    EXPECT_GT(c.select(3, 1).abs().sum().item<double>(), 0.0);
    EXPECT_EQ(c.slice(3, 2).abs().sum().item<double>(), 0.0);
  }
  ASSERT_NO_FATAL_FAILURE(ExpectClose(cache->k, Expected("self_k"), "self_k"));
  ASSERT_NO_FATAL_FAILURE(ExpectClose(cache->v, Expected("self_v"), "self_v"));
}

TEST_F(TorchScriptSmokeTest, MatchesPythonThroughTwoDecodeSteps) {
  // The default CPU start-up: decode_step on the oneDNN-prepacked weights.
  EXPECT_TRUE(model_->prepacked());
  CheckTwoSteps(model_.get());
}

TEST_F(TorchScriptSmokeTest, PlainGemmPathWhenPrepackIsOff) {
  absl::StatusOr<std::unique_ptr<TorchScriptModel>> plain =
      TorchScriptModel::Create(*dir_, {"cpu", 0, /*cpu_prepack=*/false});
  ASSERT_TRUE(plain.ok()) << plain.status();
  EXPECT_FALSE((*plain)->prepacked());
  CheckTwoSteps(plain->get());
}

TEST_F(TorchScriptSmokeTest, TorchErrorsBecomeStatus) {
  // A wrongly shaped input throws inside TorchScript; the backend must return a
  // Status instead.
  const absl::StatusOr<at::Tensor> features =
      model_->ImageFeatures(at::zeros({1, 5, 32, 32}));
  EXPECT_EQ(features.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(features.status().message(), HasSubstr("image_features"));

  absl::StatusOr<KvPair> cache = model_->EmptySelfCache(1, 4);
  ASSERT_TRUE(cache.ok()) << cache.status();
  const absl::StatusOr<at::Tensor> logits =
      model_->DecodeStep(at::zeros({1}, at::kLong), at::zeros({1}, at::kLong),
                         &*cache, *cache, at::ones({1, 3}, at::kLong),
                         at::zeros({1}, at::kLong));
  EXPECT_EQ(logits.status().code(), absl::StatusCode::kInternal);
  EXPECT_THAT(logits.status().message(), HasSubstr("decode_step"));
}

TEST_F(TorchScriptSmokeTest, RejectsBadDevices) {
  EXPECT_EQ(TorchScriptModel::Create(*dir_, {"tpu:7", 0}).status().code(),
            absl::StatusCode::kInvalidArgument);
  if (!torch::cuda::is_available()) {
    EXPECT_EQ(TorchScriptModel::Create(*dir_, {"cuda:0", 0}).status().code(),
              absl::StatusCode::kFailedPrecondition);
  }
}

TEST_F(TorchScriptSmokeTest, DecoderConfigMustMatchArtefact) {
  ModelDir wrong = *dir_;
  wrong.decoder.heads += 1;
  const auto model = TorchScriptModel::Create(wrong, {"cpu", 0});
  EXPECT_EQ(model.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(model.status().message(),
              HasSubstr("disagrees with config.json"));
}

}  // namespace
}  // namespace florence::engine
