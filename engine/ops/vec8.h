// 8-float vectors for the operators' kernel bodies (decode_attention_kernel.h, packed_linear_kernel.h): a 256-bit
// register under -mavx2, two 128-bit ones otherwise. Internal linkage on purpose: each kernel file is compiled
// once per instruction set, and a shared inline function with external linkage could be merged across the two
// compilations, the generic build calling the AVX2 copy (the one-definition rule's trap for per-file flags).
#ifndef FLORENCE_ENGINE_OPS_VEC8_H_
#define FLORENCE_ENGINE_OPS_VEC8_H_

#include <cstring>

namespace florence::ops {
namespace {  // NOLINT(build/namespaces): see above

typedef float F8 __attribute__((vector_size(32)));

inline F8 Load(const float* p) {
  F8 v;
  std::memcpy(&v, p, sizeof(v));
  return v;
}
inline void Store(float* p, F8 v) { std::memcpy(p, &v, sizeof(v)); }
inline F8 Splat(float x) { return F8{x, x, x, x, x, x, x, x}; }

}  // namespace
}  // namespace florence::ops

#endif  // FLORENCE_ENGINE_OPS_VEC8_H_
