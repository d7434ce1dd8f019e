// The fused decode-attention kernel's arguments: raw float32 pointers and element strides, so the per-ISA
// kernel files need no Torch headers (see decode_attention_kernel.h).
#ifndef FLORENCE_ENGINE_OPS_DECODE_ATTENTION_ARGS_H_
#define FLORENCE_ENGINE_OPS_DECODE_ATTENTION_ARGS_H_

#include <cstdint>

namespace florence::ops {

// q [groups, heads, queries, dim], k/v [groups, heads, keys, dim], mask [groups, keys] (nonzero = attend),
// out [groups, heads, queries, dim]; the last dimension of q, k, v and out is contiguous.
struct DecodeAttentionArgs {
  const float* q;
  const float* k;
  const float* v;
  const uint8_t* mask;
  float* out;
  int64_t groups, heads, queries, keys, dim;
  int64_t q_stride[3], k_stride[3], v_stride[3], out_stride[3];
  int64_t mask_stride[2];
  float scale;
};

// Computes (group, head) pairs [begin, end) (flattened as group * heads + head); scratch holds
// queries * keys floats. One entry point per instruction set.
void DecodeAttentionGeneric(const DecodeAttentionArgs& args, int64_t begin, int64_t end, float* scratch);
void DecodeAttentionAvx2(const DecodeAttentionArgs& args, int64_t begin, int64_t end, float* scratch);

}  // namespace florence::ops

#endif  // FLORENCE_ENGINE_OPS_DECODE_ATTENTION_ARGS_H_
