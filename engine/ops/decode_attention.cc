#include "engine/ops/decode_attention.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "engine/ops/cpu_features.h"
#include "engine/ops/decode_attention_args.h"

namespace florence::ops {
namespace {

using Kernel = void (*)(const DecodeAttentionArgs&, int64_t, int64_t, float*);

// FLORENCE_DECODE_ATTENTION_KERNEL=generic forces the baseline kernel (its tests run it on AVX2 CPUs too).
Kernel PickKernel() {
  const char* forced = std::getenv("FLORENCE_DECODE_ATTENTION_KERNEL");
  if (forced != nullptr && std::string_view(forced) == "generic") return &DecodeAttentionGeneric;
#if defined(FLORENCE_OPS_HAVE_AVX2)
  if (CpuHasAvx2()) return &DecodeAttentionAvx2;
#endif
  return &DecodeAttentionGeneric;
}

const Kernel kKernel = PickKernel();

void CheckAttentionInput(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), "florence::decode_attention: ", name, " must be on the CPU, is on ", t.device());
  TORCH_CHECK(t.scalar_type() == at::kFloat, "florence::decode_attention: ", name, " must be float32, is ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 4, "florence::decode_attention: ", name, " must be 4-D [groups, heads, len, dim], is ",
              t.sizes());
}

}  // namespace

const char* DecodeAttentionKernel() {
#if defined(FLORENCE_OPS_HAVE_AVX2)
  if (kKernel == &DecodeAttentionAvx2) return "avx2";
#endif
  return "generic";
}

at::Tensor DecodeAttention(const at::Tensor& q_in, const at::Tensor& k_in, const at::Tensor& v_in,
                           const at::Tensor& mask_in, double scale) {
  CheckAttentionInput(q_in, "q");
  CheckAttentionInput(k_in, "k");
  CheckAttentionInput(v_in, "v");
  const int64_t groups = q_in.size(0), heads = q_in.size(1), queries = q_in.size(2), dim = q_in.size(3);
  const int64_t keys = k_in.size(2);
  TORCH_CHECK(k_in.size(0) == groups && k_in.size(1) == heads && k_in.size(3) == dim,
              "florence::decode_attention: k ", k_in.sizes(), " does not match q ", q_in.sizes());
  TORCH_CHECK(v_in.sizes() == k_in.sizes(), "florence::decode_attention: v ", v_in.sizes(), " != k ",
              k_in.sizes());
  TORCH_CHECK(mask_in.dim() == 2 && mask_in.size(0) == groups && mask_in.size(1) == keys,
              "florence::decode_attention: mask must be [groups, keys] = [", groups, ", ", keys, "], is ",
              mask_in.sizes());
  TORCH_CHECK(mask_in.device().is_cpu(), "florence::decode_attention: mask must be on the CPU");
  // Only the last dimension must be contiguous; the caches are strided views of larger pools.
  const at::Tensor q = q_in.stride(3) == 1 ? q_in : q_in.contiguous();
  const at::Tensor k = k_in.stride(3) == 1 ? k_in : k_in.contiguous();
  const at::Tensor v = v_in.stride(3) == 1 ? v_in : v_in.contiguous();
  const at::Tensor mask = mask_in.scalar_type() == at::kBool ? mask_in : mask_in.ne(0);
  at::Tensor out = at::empty({groups, heads, queries, dim}, q.options());
  if (out.numel() == 0) return out;

  DecodeAttentionArgs args{};
  args.q = q.data_ptr<float>();
  args.k = k.data_ptr<float>();
  args.v = v.data_ptr<float>();
  args.mask = reinterpret_cast<const uint8_t*>(mask.data_ptr<bool>());
  args.out = out.data_ptr<float>();
  args.groups = groups;
  args.heads = heads;
  args.queries = queries;
  args.keys = keys;
  args.dim = dim;
  for (int i = 0; i < 3; ++i) {
    args.q_stride[i] = q.stride(i);
    args.k_stride[i] = k.stride(i);
    args.v_stride[i] = v.stride(i);
    args.out_stride[i] = out.stride(i);
  }
  args.mask_stride[0] = mask.stride(0);
  args.mask_stride[1] = mask.stride(1);
  args.scale = static_cast<float>(scale);
  at::parallel_for(0, groups * heads, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> scratch(static_cast<size_t>(queries * keys));
    kKernel(args, begin, end, scratch.data());
  });
  return out;
}

TORCH_LIBRARY(florence, m) {
  m.def("decode_attention(Tensor q, Tensor k, Tensor v, Tensor mask, float scale) -> Tensor");
  m.def("decode_attention_kernel() -> str");
}

TORCH_LIBRARY_IMPL(florence, CPU, m) { m.impl("decode_attention", &DecodeAttention); }

TORCH_LIBRARY_IMPL(florence, CatchAll, m) {
  m.impl("decode_attention_kernel", []() -> std::string { return DecodeAttentionKernel(); });
}

}  // namespace florence::ops
