// florence::decode_attention from C++ (engine/ops/): the dispatcher's registration, the kernel against ATen's
// scaled_dot_product_attention on decode-step shapes (KV-pool views, beams sharing a cross row, a padded
// encoder row, masked holes), and its refusals. The Python suite (tests/tools/test_ops.py) covers the same
// operator with more shapes and the forced generic kernel.
#include "engine/ops/decode_attention.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <string>

namespace florence::ops {
namespace {

at::Tensor Reference(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                     double scale) {
  return at::scaled_dot_product_attention(q, k, v, mask.unsqueeze(1).unsqueeze(1), 0.0, false, scale);
}

double MaxAbsDiff(const at::Tensor& a, const at::Tensor& b) { return (a - b).abs().max().item<double>(); }

TEST(DecodeAttention, RegisteredWithTheDispatcher) {
  auto op = c10::Dispatcher::singleton().findSchema({"florence::decode_attention", ""});
  ASSERT_TRUE(op.has_value());
  const std::string kernel = DecodeAttentionKernel();
  EXPECT_TRUE(kernel == "avx2" || kernel == "generic") << kernel;
}

TEST(DecodeAttention, SelfAttentionOverKvPoolViewsMatchesSdpa) {
  at::manual_seed(1);
  // 5 rows of a [rows, heads, 1024, 64] pool, each at its own decoder position.
  const at::Tensor pool_k = at::randn({5, 12, 1024, 64}), pool_v = at::randn({5, 12, 1024, 64});
  const at::Tensor k = pool_k.narrow(2, 0, 160), v = pool_v.narrow(2, 0, 160);
  const at::Tensor q = at::randn({5, 12, 1, 64});
  const at::Tensor positions = at::tensor({0, 6, 7, 8, 159}, at::kLong);
  const at::Tensor mask = at::arange(160, at::kLong).unsqueeze(0) <= positions.unsqueeze(1);
  const at::Tensor got = DecodeAttention(q, k, v, mask, 0.125);
  EXPECT_LE(MaxAbsDiff(got, Reference(q, k, v, mask, 0.125)), 2e-6);
}

TEST(DecodeAttention, BeamsAsQueryRowsOfOneCrossRowMatchSdpa) {
  at::manual_seed(2);
  // 3 requests x 3 beams: q [G, Q, H, D] transposed as decode_step builds it; the last request is shorter.
  const at::Tensor q = at::randn({3, 3, 12, 64}).transpose(1, 2);
  const at::Tensor k = at::randn({3, 12, 600, 64}) * 3, v = at::randn({3, 12, 600, 64});
  at::Tensor mask = at::ones({3, 600}, at::kBool);
  mask.select(0, 2).narrow(0, 590, 10).fill_(false);
  EXPECT_LE(MaxAbsDiff(DecodeAttention(q, k, v, mask, 0.125), Reference(q, k, v, mask, 0.125)), 2e-6);
  // Masked positions inside the range (an aspect-preserving image's padding).
  mask = at::rand({3, 600}) > 0.25;
  EXPECT_LE(MaxAbsDiff(DecodeAttention(q, k, v, mask, 0.125), Reference(q, k, v, mask, 0.125)), 2e-6);
}

TEST(DecodeAttention, CallableThroughTheDispatcherAsArtefactsCallIt) {
  at::manual_seed(3);
  auto op = c10::Dispatcher::singleton()
                .findSchemaOrThrow("florence::decode_attention", "")
                .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                  double)>();
  const at::Tensor q = at::randn({2, 4, 2, 64}), k = at::randn({2, 4, 33, 64}), v = at::randn({2, 4, 33, 64});
  const at::Tensor mask = at::ones({2, 33}, at::kBool);
  EXPECT_LE(MaxAbsDiff(op.call(q, k, v, mask, 0.125), Reference(q, k, v, mask, 0.125)), 2e-6);
}

TEST(DecodeAttention, RefusesWhatItCannotRunWithAMessage) {
  const at::Tensor q = at::randn({2, 4, 1, 64}), k = at::randn({2, 4, 9, 64});
  const at::Tensor mask = at::ones({2, 9}, at::kBool);
  try {
    DecodeAttention(q.to(at::kDouble), k, k, mask, 0.125);
    FAIL() << "float64 accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("q must be float32"), std::string::npos);
  }
  try {
    DecodeAttention(q, k, k, at::ones({2, 8}, at::kBool), 0.125);
    FAIL() << "mask of the wrong length accepted";
  } catch (const c10::Error& e) {
    EXPECT_NE(std::string(e.what_without_backtrace()).find("mask must be [groups, keys] = [2, 9]"),
              std::string::npos);
  }
}

}  // namespace
}  // namespace florence::ops
