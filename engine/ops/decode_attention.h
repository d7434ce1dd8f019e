// florence::decode_attention, a Torch operator: attention for a decode step's few query rows against a long
// K/V cache, reading each (row, head)'s K and V once. Registered with the dispatcher by this library
// (libflorence_ops) for CPU float32; TorchScript artefacts exported by tools/florence2 call it from their
// decode step on the CPU (see tools/florence2/ops.py for the Python side, which loads this library).
#ifndef FLORENCE_ENGINE_OPS_DECODE_ATTENTION_H_
#define FLORENCE_ENGINE_OPS_DECODE_ATTENTION_H_

#include <ATen/core/Tensor.h>

namespace florence::ops {

// softmax(q k^T * scale, masked) v over the keys. q [G, H, Q, D], k/v [G, H, S, D] (any strides, last dimension
// contiguous), mask [G, S] bool (true = attend; any strides). Returns [G, H, Q, D] float32. Equal to
// torch's scaled_dot_product_attention with attn_mask = mask[:, None, None, :] up to float rounding, except
// that a row with no unmasked key gives zeros (SDPA: NaN).
at::Tensor DecodeAttention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask,
                           double scale);

// Which kernel this process runs: "avx2" (x86-64 with AVX2 + FMA) or "generic"; the environment variable
// FLORENCE_DECODE_ATTENTION_KERNEL=generic, read once at load, forces the latter.
const char* DecodeAttentionKernel();

}  // namespace florence::ops

#endif  // FLORENCE_ENGINE_OPS_DECODE_ATTENTION_H_
