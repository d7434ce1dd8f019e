// The packed-linear kernel for AVX2 + FMA CPUs; CMake compiles this file alone with -mavx2 -mfma, and
// packed_linear.cc calls it only where the CPU reports both.
#define FLORENCE_PACKED_LINEAR_ENTRY PackedLinearAvx2
#include "engine/ops/packed_linear_kernel.h"
