// The packed-linear kernel's arguments: raw float32 pointers and sizes, so the per-ISA kernel files need no
// Torch headers (see packed_linear_kernel.h).
#ifndef FLORENCE_ENGINE_OPS_PACKED_LINEAR_ARGS_H_
#define FLORENCE_ENGINE_OPS_PACKED_LINEAR_ARGS_H_

#include <cstdint>

namespace florence::ops {

// Output columns per panel of a packed weight: pack_linear stores an [out, in] weight as
// [ceil(out / kPackedLinearPanel), in, kPackedLinearPanel], each panel's columns interleaved per input element
// (zero columns pad the last panel).
inline constexpr int64_t kPackedLinearPanel = 16;

// y [rows, out] = x [rows, in] * W^T + bias, all contiguous; bias has `out` entries or is null.
struct PackedLinearArgs {
  const float* x;
  const float* packed;
  const float* bias;
  float* y;
  int64_t rows, in, out;
};

// Computes the output columns of panels [begin, end); `tile` holds rows * kPackedLinearPanel floats (the last,
// partial panel is computed there). One entry point per instruction set.
void PackedLinearGeneric(const PackedLinearArgs& args, int64_t begin, int64_t end, float* tile);
void PackedLinearAvx2(const PackedLinearArgs& args, int64_t begin, int64_t end, float* tile);

}  // namespace florence::ops

#endif  // FLORENCE_ENGINE_OPS_PACKED_LINEAR_ARGS_H_
