// The decode-attention kernel for AVX2 + FMA CPUs; CMake compiles this file alone with -mavx2 -mfma, and
// decode_attention.cc calls it only where the CPU reports both.
#define FLORENCE_DECODE_ATTENTION_ENTRY DecodeAttentionAvx2
#include "engine/ops/decode_attention_kernel.h"
