// The decode-attention kernel at the build's baseline instruction set (any x86-64, or another architecture).
#define FLORENCE_DECODE_ATTENTION_ENTRY DecodeAttentionGeneric
#include "engine/ops/decode_attention_kernel.h"
