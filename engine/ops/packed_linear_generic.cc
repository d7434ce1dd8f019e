// The packed-linear kernel at the build's baseline instruction set (any x86-64, or another architecture).
#define FLORENCE_PACKED_LINEAR_ENTRY PackedLinearGeneric
#include "engine/ops/packed_linear_kernel.h"
