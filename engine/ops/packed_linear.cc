#include "engine/ops/packed_linear.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "engine/ops/cpu_features.h"
#include "engine/ops/packed_linear_args.h"

namespace florence::ops {
namespace {

using Kernel = void (*)(const PackedLinearArgs&, int64_t, int64_t, float*);

std::string_view Forced() {
  const char* forced = std::getenv("FLORENCE_PACKED_LINEAR");
  return forced == nullptr ? std::string_view() : std::string_view(forced);
}

// The kernel PackedLinear runs: the AVX2 one where the CPU has it, unless FLORENCE_PACKED_LINEAR=generic.
Kernel PickKernel() {
#if defined(FLORENCE_OPS_HAVE_AVX2)
  if (Forced() != "generic" && CpuHasAvx2()) return &PackedLinearAvx2;
#endif
  return &PackedLinearGeneric;
}

const Kernel kKernel = PickKernel();

}  // namespace

const char* PackedLinearRunningKernel() {
#if defined(FLORENCE_OPS_HAVE_AVX2)
  if (kKernel == &PackedLinearAvx2) return "avx2";
#endif
  return "generic";
}

namespace {

// Measured on an AVX2-only AMD EPYC (docs/PERFORMANCE.md): this kernel beats oneDNN's prepacked GEMM at every
// decode batch from 1 to 32 rows. CPUs with AVX-512 (oneDNN's kernels use it, and AMX where present) keep
// oneDNN until the kernel has been measured there; so do CPUs without AVX2.
const char* Recommend() {
  const std::string_view forced = Forced();
  if (forced == "onednn") return "onednn";
  if (forced == "generic" || forced == "avx2") return PackedLinearRunningKernel();
  return kKernel != &PackedLinearGeneric && !CpuHasAvx512() ? PackedLinearRunningKernel() : "onednn";
}

const char* const kRecommended = Recommend();

}  // namespace

const char* PackedLinearKernel() { return kRecommended; }

at::Tensor PackLinear(const at::Tensor& weight) {
  TORCH_CHECK(weight.dim() == 2, "florence::pack_linear: weight must be 2-D [out, in], is ", weight.sizes());
  TORCH_CHECK(weight.device().is_cpu() && weight.scalar_type() == at::kFloat,
              "florence::pack_linear: weight must be CPU float32, is ", weight.device(), " ",
              weight.scalar_type());
  const int64_t out = weight.size(0), in = weight.size(1);
  const int64_t panels = (out + kPackedLinearPanel - 1) / kPackedLinearPanel;
  return at::constant_pad_nd(weight, {0, 0, 0, panels * kPackedLinearPanel - out})
      .view({panels, kPackedLinearPanel, in})
      .transpose(1, 2)
      .contiguous();
}

at::Tensor PackedLinear(const at::Tensor& x_in, const at::Tensor& packed_in, const std::optional<at::Tensor>& bias_in,
                        int64_t out) {
  TORCH_CHECK(x_in.device().is_cpu() && x_in.scalar_type() == at::kFloat,
              "florence::packed_linear: x must be CPU float32, is ", x_in.device(), " ", x_in.scalar_type());
  TORCH_CHECK(x_in.dim() >= 1, "florence::packed_linear: x must have an input dimension");
  TORCH_CHECK(packed_in.device().is_cpu() && packed_in.scalar_type() == at::kFloat && packed_in.dim() == 3 &&
                  packed_in.size(2) == kPackedLinearPanel,
              "florence::packed_linear: packed must be a CPU float32 [panels, in, ", kPackedLinearPanel,
              "] tensor from florence::pack_linear, is ", packed_in.device(), " ", packed_in.scalar_type(), " ",
              packed_in.sizes());
  const int64_t in = packed_in.size(1), panels = packed_in.size(0);
  TORCH_CHECK(x_in.size(-1) == in, "florence::packed_linear: x has ", x_in.size(-1),
              " input features, the packed weight ", in);
  TORCH_CHECK(out > (panels - 1) * kPackedLinearPanel && out <= panels * kPackedLinearPanel,
              "florence::packed_linear: out_features ", out, " does not match the packed weight's ", panels,
              " panels of ", kPackedLinearPanel);
  const at::Tensor x = x_in.reshape({-1, in}).contiguous();
  const at::Tensor packed = packed_in.contiguous();
  at::Tensor bias;
  if (bias_in.has_value() && bias_in->defined()) {
    TORCH_CHECK(bias_in->device().is_cpu() && bias_in->scalar_type() == at::kFloat && bias_in->numel() == out,
                "florence::packed_linear: bias must be CPU float32 with ", out, " entries, is ",
                bias_in->device(), " ", bias_in->scalar_type(), " ", bias_in->sizes());
    bias = bias_in->reshape({out}).contiguous();
  }
  std::vector<int64_t> shape = x_in.sizes().vec();
  shape.back() = out;
  const int64_t rows = x.size(0);
  at::Tensor y = at::empty({rows, out}, x.options());
  if (rows > 0 && out > 0) {
    PackedLinearArgs args{};
    args.x = x.data_ptr<float>();
    args.packed = packed.data_ptr<float>();
    args.bias = bias.defined() ? bias.data_ptr<float>() : nullptr;
    args.y = y.data_ptr<float>();
    args.rows = rows;
    args.in = in;
    args.out = out;
    at::parallel_for(0, panels, 1, [&](int64_t begin, int64_t end) {
      std::vector<float> tile(static_cast<size_t>(rows * kPackedLinearPanel));
      kKernel(args, begin, end, tile.data());
    });
  }
  return y.view(shape);
}

TORCH_LIBRARY_FRAGMENT(florence, m) {
  m.def("pack_linear(Tensor weight) -> Tensor");
  m.def("packed_linear(Tensor x, Tensor packed, Tensor? bias, int out_features) -> Tensor");
  m.def("packed_linear_kernel() -> str");
}

TORCH_LIBRARY_IMPL(florence, CPU, m) {
  m.impl("pack_linear", &PackLinear);
  m.impl("packed_linear", &PackedLinear);
}

TORCH_LIBRARY_IMPL(florence, CatchAll, m) {
  m.impl("packed_linear_kernel", []() -> std::string { return PackedLinearKernel(); });
}

}  // namespace florence::ops
