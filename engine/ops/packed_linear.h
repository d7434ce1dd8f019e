// florence::pack_linear / florence::packed_linear, Torch operators: a linear layer for a decode step's few rows
// against a large weight, on a copy of the weight packed once into 16-column panels (packed_linear_kernel.h).
// Registered with the dispatcher by this library (libflorence_ops) for CPU float32; TorchScript artefacts
// exported by tools/florence2 pack their decoder and lm_head weights with it in pack_for_cpu where
// florence::packed_linear_kernel() names a kernel (see tools/florence2/ops.py for the Python side).
#ifndef FLORENCE_ENGINE_OPS_PACKED_LINEAR_H_
#define FLORENCE_ENGINE_OPS_PACKED_LINEAR_H_

#include <ATen/core/Tensor.h>

#include <optional>

namespace florence::ops {

// weight [out, in] float32 -> [ceil(out / 16), in, 16]: panel p holds output columns 16p..16p+15, interleaved
// per input element; zero columns pad the last panel.
at::Tensor PackLinear(const at::Tensor& weight);

// x [..., in] * W^T + bias -> [..., out] float32, W packed by PackLinear; equal to torch's linear up to float
// rounding (each output a sum over the input dimension in order, kept in float32).
at::Tensor PackedLinear(const at::Tensor& x, const at::Tensor& packed, const std::optional<at::Tensor>& bias,
                        int64_t out_features);

// The kernel pack_for_cpu should use on this CPU: "avx2" (x86-64 with AVX2 + FMA and without AVX-512, where it
// was measured against oneDNN), else "onednn" (keep oneDNN's prepacked GEMM). The environment variable
// FLORENCE_PACKED_LINEAR, read once at load, overrides it: "onednn", "avx2" (where the CPU has it) or
// "generic" (the baseline kernel; its tests run it on AVX2 CPUs too).
const char* PackedLinearKernel();

// The kernel PackedLinear runs whoever asks for it: "avx2" (x86-64 with AVX2 + FMA) or "generic" (elsewhere, or
// with FLORENCE_PACKED_LINEAR=generic).
const char* PackedLinearRunningKernel();

}  // namespace florence::ops

#endif  // FLORENCE_ENGINE_OPS_PACKED_LINEAR_H_
