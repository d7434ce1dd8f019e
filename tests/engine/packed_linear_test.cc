// florence::pack_linear / florence::packed_linear from C++ (engine/ops/): the dispatcher's registration, the
// kernel against ATen's linear in float64 on decode-step shapes, and its refusals. The Python suite
// (tests/tools/test_packed_linear.py) covers more shapes, the forced generic kernel and the exported decode step.
#include "engine/ops/packed_linear.h"

#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <c10/util/Exception.h>
#include <gtest/gtest.h>

#include <string>

namespace florence::ops {
namespace {

// The largest error relative to each output's sum of |terms| (float32 rounding is ~1e-7 of it).
double RelativeError(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, const at::Tensor& got) {
  const at::Tensor want = at::linear(x.to(at::kDouble), w.to(at::kDouble), b.to(at::kDouble));
  const at::Tensor magnitude = at::linear(x.to(at::kDouble).abs(), w.to(at::kDouble).abs()) + b.to(at::kDouble).abs();
  return ((got.to(at::kDouble) - want).abs() / magnitude).max().item<double>();
}

TEST(PackedLinear, RegisteredWithTheDispatcher) {
  for (const char* name : {"florence::pack_linear", "florence::packed_linear", "florence::packed_linear_kernel"}) {
    EXPECT_TRUE(c10::Dispatcher::singleton().findSchema({name, ""}).has_value()) << name;
  }
  const std::string running = PackedLinearRunningKernel();
  EXPECT_TRUE(running == "avx2" || running == "generic") << running;
  const std::string recommended = PackedLinearKernel();
  EXPECT_TRUE(recommended == running || recommended == "onednn") << recommended;
}

TEST(PackedLinear, DecodeShapesMatchLinear) {
  at::manual_seed(4);
  // (rows, in, out): a beam-3 step's q|k|v, a 32-row step's fc2 (input chunks), lm_head-like partial panel.
  for (const auto& [rows, in, out] : {std::tuple<int64_t, int64_t, int64_t>{3, 768, 2304}, {32, 3072, 768},
                                      {11, 768, 1005}, {1, 64, 1}}) {
    const at::Tensor w = at::randn({out, in}) / std::sqrt(static_cast<double>(in));
    const at::Tensor b = at::randn({out});
    const at::Tensor x = at::randn({rows, 1, in});
    const at::Tensor got = PackedLinear(x, PackLinear(w), b, out);
    ASSERT_EQ(got.sizes().vec(), (std::vector<int64_t>{rows, 1, out}));
    EXPECT_LE(RelativeError(x, w, b, got), 1e-5) << rows << "x" << in << "->" << out;
  }
}

TEST(PackedLinear, CallableThroughTheDispatcherAsArtefactsCallIt) {
  at::manual_seed(5);
  const at::Tensor w = at::randn({40, 96}), b = at::randn({40}), x = at::randn({7, 96});
  auto& dispatcher = c10::Dispatcher::singleton();
  const at::Tensor packed = dispatcher.findSchemaOrThrow("florence::pack_linear", "")
                                .typed<at::Tensor(const at::Tensor&)>()
                                .call(w);
  const at::Tensor got =
      dispatcher.findSchemaOrThrow("florence::packed_linear", "")
          .typed<at::Tensor(const at::Tensor&, const at::Tensor&, const std::optional<at::Tensor>&, int64_t)>()
          .call(x, packed, b, 40);
  EXPECT_LE(RelativeError(x, w, b, got), 1e-5);
}

TEST(PackedLinear, RefusesBadInputsWithAMessage) {
  const at::Tensor w = at::randn({37, 24});
  const at::Tensor packed = PackLinear(w);
  auto message = [](auto&& call) -> std::string {
    try {
      call();
    } catch (const c10::Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message([&] { PackedLinear(at::randn({2, 25}), packed, std::nullopt, 37); })
                .find("x has 25 input features"),
            std::string::npos);
  EXPECT_NE(message([&] { PackedLinear(at::randn({2, 24}), packed, std::nullopt, 32); }).find("out_features 32"),
            std::string::npos);
  EXPECT_NE(message([&] { PackedLinear(at::randn({2, 24}), w, std::nullopt, 37); })
                .find("from florence::pack_linear"),
            std::string::npos);
  EXPECT_NE(message([&] { PackLinear(w.to(at::kHalf)); }).find("weight must be CPU float32"), std::string::npos);
}

}  // namespace
}  // namespace florence::ops
