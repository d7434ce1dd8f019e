// AotiModel (torch.export + AOTInductor packages, engine/aoti_model.h) on the
// tiny test model, whose <dir>/aoti/ the setup test setup.export_tiny_aoti
// compiles, against TorchScriptModel on the same weights: the KV-pool layout
// (strided views) the scheduler hands DecodeStep, the layouts it refuses, and
// the errors of backend selection.
#include "engine/aoti_model.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <memory>
#include <string>

#include "engine/backend.h"
#include "engine/model_dir.h"
#include "engine/torchscript_model.h"
#include "tests/engine/test_data.h"

namespace florence::engine {
namespace {

using ::testing::HasSubstr;

constexpr double kTol = 1e-4;  // inductor orders reductions differently

class AotiModelTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto dir = LoadModelDir(testdata::TestModelDir());
    ASSERT_TRUE(dir.ok()) << dir.status();
    dir_ = new ModelDir(*dir);
    auto aoti = AotiModel::Create(*dir_, {});
    ASSERT_TRUE(aoti.ok()) << aoti.status();
    aoti_ = aoti->release();
    auto ts = TorchScriptModel::Create(*dir_, {"cpu", 0});
    ASSERT_TRUE(ts.ok()) << ts.status();
    ts_ = ts->release();
  }
  static void TearDownTestSuite() {
    delete aoti_;
    delete ts_;
    delete dir_;
  }

  static ModelDir* dir_;
  static AotiModel* aoti_;
  static TorchScriptModel* ts_;
};
ModelDir* AotiModelTest::dir_ = nullptr;
AotiModel* AotiModelTest::aoti_ = nullptr;
TorchScriptModel* AotiModelTest::ts_ = nullptr;

double MaxDiff(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>();
}

TEST_F(AotiModelTest, PrefillMatchesTorchScript) {
  c10::InferenceMode guard;
  at::manual_seed(0);
  const int64_t size = dir_->preprocess.size;
  const at::Tensor pixels = at::randn({2, 3, size, size});
  auto feats = aoti_->ImageFeatures(pixels);
  auto feats_ts = ts_->ImageFeatures(pixels);
  ASSERT_TRUE(feats.ok() && feats_ts.ok()) << feats.status();
  EXPECT_LE(MaxDiff(*feats, *feats_ts), kTol);
  const at::Tensor ids = at::tensor({0, 2264, 473, 5, 2}, at::kLong).repeat({2, 1});
  at::Tensor mask = at::ones({2, feats->size(1) + 5}, at::kLong);
  mask[1][-1] = 0;
  auto enc = aoti_->Encode(*feats, ids, mask);
  auto enc_ts = ts_->Encode(*feats, ids, mask);
  ASSERT_TRUE(enc.ok() && enc_ts.ok()) << enc.status();
  EXPECT_LE(MaxDiff(*enc, *enc_ts), kTol);
  // A non-contiguous read-only input is made contiguous, not misread.
  auto cross = aoti_->CrossKv(enc->transpose(0, 1).contiguous().transpose(0, 1));
  auto cross_ts = ts_->CrossKv(*enc);
  ASSERT_TRUE(cross.ok() && cross_ts.ok()) << cross.status();
  EXPECT_LE(MaxDiff(cross->k, cross_ts->k), kTol);
  EXPECT_LE(MaxDiff(cross->v, cross_ts->v), kTol);
}

// The scheduler's KvPool hands DecodeStep narrow()ed views of its tensors
// (batching/kv_pool.cc SelfView / CrossView / MaskView): strided, which the
// compiled code cannot read. The pooled graph gets the pool tensors instead.
TEST_F(AotiModelTest, DecodeStepOnKvPoolViewsMatchesTorchScript) {
  c10::InferenceMode guard;
  at::manual_seed(1);
  const auto& d = dir_->decoder;
  const at::Tensor pool_k = at::randn({d.layers, 8, d.heads, 32, d.head_dim});
  const at::Tensor pool_v = at::randn_like(pool_k);
  const at::Tensor cross_k = at::randn({d.layers, 5, d.heads, 40, d.head_dim});
  const at::Tensor cross_v = at::randn_like(cross_k);
  at::Tensor mask = at::ones({5, 40}, at::kLong);
  mask.narrow(1, 30, 10)[0].zero_();
  const int64_t n = 4, s = 13, g = 3, c = 35;
  const at::Tensor ids = at::tensor({17, 2, 901, 40}, at::kLong);
  const at::Tensor pos = at::tensor({0, 12, 4, 7}, at::kLong);
  const at::Tensor rows = at::tensor({2, 0, 2, 1}, at::kLong);
  auto view = [&](const at::Tensor& t, int64_t r, int64_t len) {
    return t.narrow(1, 0, r).narrow(3, 0, len);
  };
  KvPair ts_pool{pool_k.clone(), pool_v.clone()};
  KvPair ao_pool{pool_k.clone(), pool_v.clone()};
  KvPair ts_view{view(ts_pool.k, n, s), view(ts_pool.v, n, s)};
  KvPair ao_view{view(ao_pool.k, n, s), view(ao_pool.v, n, s)};
  ASSERT_FALSE(ao_view.k.is_contiguous());
  const KvPair cross{view(cross_k, g, c), view(cross_v, g, c)};
  const at::Tensor mask_view = mask.narrow(0, 0, g).narrow(1, 0, c);
  auto ref = ts_->DecodeStep(ids, pos, &ts_view, cross, mask_view, rows);
  auto ours = aoti_->DecodeStep(ids, pos, &ao_view, cross, mask_view, rows);
  ASSERT_TRUE(ref.ok()) << ref.status();
  ASSERT_TRUE(ours.ok()) << ours.status();
  EXPECT_LE(MaxDiff(*ours, *ref), kTol);
  // Written where TorchScript writes, through the caller's views, and nowhere
  // else in the pool.
  EXPECT_LE(MaxDiff(ao_pool.k, ts_pool.k), kTol);
  EXPECT_LE(MaxDiff(ao_pool.v, ts_pool.v), kTol);
  EXPECT_GT(MaxDiff(ao_pool.k, pool_k), 0.1);
  EXPECT_TRUE(at::equal(ao_pool.k.narrow(1, n, 8 - n), pool_k.narrow(1, n, 8 - n)));
  EXPECT_TRUE(at::equal(ao_pool.k.narrow(3, s, 32 - s), pool_k.narrow(3, s, 32 - s)));

  // The whole (contiguous) pool as a view of itself: the same rows give the
  // same logits as the narrowed call.
  KvPair whole{pool_k.narrow(1, 0, n).clone(), pool_v.narrow(1, 0, n).clone()};
  auto contiguous = aoti_->DecodeStep(ids, pos, &whole, cross, mask_view, rows);
  ASSERT_TRUE(contiguous.ok()) << contiguous.status();
  EXPECT_LE(MaxDiff(*contiguous, *ref), kTol);
}

TEST_F(AotiModelTest, LayoutsItCannotReadAreRefused) {
  c10::InferenceMode guard;
  const auto& d = dir_->decoder;
  const at::Tensor pool = at::zeros({d.layers, 8, d.heads, 32, d.head_dim});
  const KvPair cross{at::zeros({d.layers, 1, d.heads, 20, d.head_dim}),
                     at::zeros({d.layers, 1, d.heads, 20, d.head_dim})};
  const at::Tensor mask = at::ones({1, 20}, at::kLong);
  const at::Tensor ids = at::ones({2}, at::kLong);
  const at::Tensor zeros = at::zeros({2}, at::kLong);
  const at::Tensor cases[] = {
      pool.narrow(1, 1, 2).narrow(3, 0, 9),  // rows 1..2: storage offset
      pool.narrow(1, 0, 2).narrow(3, 0, 18).slice(3, 0, 18, 2),  // every other position
      at::zeros({d.layers, d.heads, 2, 9, d.head_dim}).transpose(1, 2),  // heads before rows
  };
  for (const at::Tensor& bad : cases) {
    KvPair cache{bad, bad};
    auto out = aoti_->DecodeStep(ids, zeros, &cache, cross, mask, zeros);
    EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
    EXPECT_THAT(out.status().message(), HasSubstr("neither contiguous"));
    EXPECT_THAT(out.status().message(), HasSubstr("self_k"));
  }
  // Sizes that disagree: 3 ids for a 2-row cache.
  KvPair cache{pool.narrow(1, 0, 2), pool.narrow(1, 0, 2)};
  auto out = aoti_->DecodeStep(at::ones({3}, at::kLong), at::zeros({3}, at::kLong),
                               &cache, cross, mask, at::zeros({3}, at::kLong));
  EXPECT_EQ(out.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(at::equal(pool, at::zeros_like(pool)));  // nothing written
}

TEST_F(AotiModelTest, MissingPackagesNameTheExportCommand) {
  AotiModel::Options options;
  options.package_dir = ::testing::TempDir() + "/no-such-aoti";
  auto model = AotiModel::Create(*dir_, options);
  EXPECT_EQ(model.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(model.status().message(),
              HasSubstr("tools/florence2_export_aoti.py --model-dir"));
}

TEST_F(AotiModelTest, BackendSelection) {
  auto ts = CreateBackend(*dir_, {"auto", "cpu", 0, true});
  ASSERT_TRUE(ts.ok()) << ts.status();
  EXPECT_EQ(ts->name, "torchscript");
  auto aoti = CreateBackend(*dir_, {"aoti", "cpu", 0, true});
  ASSERT_TRUE(aoti.ok()) << aoti.status();
  EXPECT_EQ(aoti->name, "aoti");
  EXPECT_EQ(CreateBackend(*dir_, {"onnx", "cpu", 0, true}).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Compiled for the CPU: refused on another device kind, never run there.
  EXPECT_NE(CreateBackend(*dir_, {"aoti", "cuda:0", 0, true}).status().code(),
            absl::StatusCode::kOk);
}

}  // namespace
}  // namespace florence::engine
