// The fused decode-attention kernel body, compiled once per instruction set (decode_attention_avx2.cc with
// -mavx2 -mfma, decode_attention_generic.cc with the build's default flags) and picked at run time by
// decode_attention.cc. Everything here has internal linkage and uses no library templates, so the two
// compilations cannot lend each other an AVX2 copy of a shared inline function (the one-definition rule's trap
// for per-file instruction sets); the caller provides the scratch memory.
//
// Include after defining FLORENCE_DECODE_ATTENTION_ENTRY, the name of the entry point this file compiles.
#include <cstdint>
#include <cstring>

#include "engine/ops/decode_attention_args.h"
#include "engine/ops/vec8.h"

namespace florence::ops {
namespace {

typedef int32_t I8 __attribute__((vector_size(32)));  // F8's lanes as integers (vec8.h)
inline float Sum(F8 v) { return ((v[0] + v[4]) + (v[1] + v[5])) + ((v[2] + v[6]) + (v[3] + v[7])); }
inline float Max(float a, float b) { return a > b ? a : b; }

// exp on 8 lanes: Cephes' expf (range reduction by ln 2 in two parts, degree-6 polynomial, exponent by integer
// add), about 1 ulp over the range used here (x <= 0). Inputs below -87.3 flush to exp(-87.3) ~ 1e-38.
inline F8 Exp(F8 x) {
  const F8 lo = Splat(-87.3f);
  x = x < lo ? lo : x;
  const F8 fx = x * Splat(1.44269504088896341f) + Splat(0.5f);
  F8 n = __builtin_convertvector(__builtin_convertvector(fx, I8), F8);  // truncates toward zero
  n = n > fx ? n - Splat(1.0f) : n;                                     // floor
  x = x - n * Splat(0.693359375f) - n * Splat(-2.12194440e-4f);
  const F8 z = x * x;
  F8 y = Splat(1.9875691500e-4f);
  y = y * x + Splat(1.3981999507e-3f);
  y = y * x + Splat(8.3334519073e-3f);
  y = y * x + Splat(4.1665795894e-2f);
  y = y * x + Splat(1.6666665459e-1f);
  y = y * x + Splat(5.0000001201e-1f);
  y = y * z + x + Splat(1.0f);
  const I8 bits = (__builtin_convertvector(n, I8) + 127) << 23;
  F8 scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return y * scale;
}

// a . b over d floats; kChunks > 0: d == 8 * kChunks, unrolled (the common head size 64 is 8 chunks).
template <int kChunks>
inline float Dot(const float* a, const float* b, int64_t d) {
  if constexpr (kChunks > 0) {
    F8 acc0 = Load(a) * Load(b), acc1 = Splat(0.f);
    for (int c = 1; c < kChunks; ++c) {
      if (c % 2) acc1 += Load(a + 8 * c) * Load(b + 8 * c);
      else acc0 += Load(a + 8 * c) * Load(b + 8 * c);
    }
    return Sum(acc0 + acc1);
  } else {
    float s = 0.f;
    for (int64_t c = 0; c < d; ++c) s += a[c] * b[c];
    return s;
  }
}

// The four dot products a . b[j * b_stride] (j < 4) over 8 * kChunks floats, reduced together: the four
// accumulators are transposed into one vector by two rounds of pairwise sums (no per-product horizontal sum).
template <int kChunks>
inline void Dot4(const float* a, const float* b, int64_t b_stride, float scale, float* out) {
  F8 acc[4];
  for (int j = 0; j < 4; ++j) {
    const float* bj = b + j * b_stride;
    F8 x = Load(a) * Load(bj), y = Splat(0.f);
    for (int c = 1; c < kChunks; ++c) {
      if (c % 2) y += Load(a + 8 * c) * Load(bj + 8 * c);
      else x += Load(a + 8 * c) * Load(bj + 8 * c);
    }
    acc[j] = x + y;
  }
  // __builtin_shufflevector: GCC >= 12 and Clang.
#define FLORENCE_EVEN(x, y) __builtin_shufflevector(x, y, 0, 8, 2, 10, 4, 12, 6, 14)
#define FLORENCE_ODD(x, y) __builtin_shufflevector(x, y, 1, 9, 3, 11, 5, 13, 7, 15)
  const F8 p01 = FLORENCE_EVEN(acc[0], acc[1]) + FLORENCE_ODD(acc[0], acc[1]);
  const F8 p23 = FLORENCE_EVEN(acc[2], acc[3]) + FLORENCE_ODD(acc[2], acc[3]);
#undef FLORENCE_EVEN
#undef FLORENCE_ODD
  // lanes 0-3: products 0, 1, 2, 3 over elements 0-3 of each 8; lanes 4-7: the same over elements 4-7
  const F8 q = __builtin_shufflevector(p01, p23, 0, 1, 8, 9, 4, 5, 12, 13) +
               __builtin_shufflevector(p01, p23, 2, 3, 10, 11, 6, 7, 14, 15);
  for (int j = 0; j < 4; ++j) out[j] = (q[j] + q[j + 4]) * scale;
}

// Asks for V's row while K's is read, so that the V pass finds it in L2: two streams in flight, not one.
template <int kChunks>
inline void PrefetchRow(const float* row) {
  if constexpr (kChunks > 0) {
    for (int c = 0; c < kChunks; c += 2) __builtin_prefetch(row + 8 * c, 0, 2);  // one per 64-byte line
  }
}

// p[0..n) = exp(p - max) in place; returns the sum.
inline float SoftmaxNumerators(float* p, int64_t n) {
  float m = p[0];
  for (int64_t s = 1; s < n; ++s) m = Max(m, p[s]);
  const F8 mv = Splat(m);
  F8 total = Splat(0.f);
  int64_t s = 0;
  for (; s + 8 <= n; s += 8) {
    const F8 e = Exp(Load(p + s) - mv);
    Store(p + s, e);
    total += e;
  }
  float sum = Sum(total);
  if (s < n) {  // the tail through one padded vector
    float tail[8];
    for (int64_t j = 0; j < 8; ++j) tail[j] = s + j < n ? p[s + j] : m - 200.f;
    const F8 e = Exp(Load(tail) - mv);
    for (int64_t j = 0; s + j < n; ++j) {
      p[s + j] = e[j];
      sum += e[j];
    }
  }
  return sum;
}

// out_row[0..d) = inv * sum_s p[s] * V[s]; kChunks as for Dot (the accumulators then stay in registers).
template <int kChunks>
inline void WeightedSum(const float* p, const float* v, int64_t v_stride, int64_t n, int64_t d, float inv,
                        float* out_row) {
  if constexpr (kChunks > 0) {
    F8 acc[kChunks];
    for (int c = 0; c < kChunks; ++c) acc[c] = Splat(0.f);
    for (int64_t s = 0; s < n; ++s) {
      const F8 wv = Splat(p[s]);  // masked positions have p = 0
      const float* row = v + s * v_stride;
      for (int c = 0; c < kChunks; ++c) acc[c] += wv * Load(row + 8 * c);
    }
    const F8 iv = Splat(inv);
    for (int c = 0; c < kChunks; ++c) Store(out_row + 8 * c, acc[c] * iv);
  } else {
    for (int64_t c = 0; c < d; ++c) out_row[c] = 0.f;
    for (int64_t s = 0; s < n; ++s) {
      const float w = p[s];
      const float* row = v + s * v_stride;
      for (int64_t c = 0; c < d; ++c) out_row[c] += w * row[c];
    }
    for (int64_t c = 0; c < d; ++c) out_row[c] *= inv;
  }
}

template <int kChunks>
void Attend(const DecodeAttentionArgs& a, int64_t begin, int64_t end, float* scratch) {
  for (int64_t gh = begin; gh < end; ++gh) {
    const int64_t g = gh / a.heads, h = gh % a.heads;
    const uint8_t* mask = a.mask + g * a.mask_stride[0];
    int64_t n = a.keys;  // positions up to the last unmasked one
    while (n > 0 && mask[(n - 1) * a.mask_stride[1]] == 0) --n;
    const float* q = a.q + g * a.q_stride[0] + h * a.q_stride[1];
    const float* k = a.k + g * a.k_stride[0] + h * a.k_stride[1];
    const float* v = a.v + g * a.v_stride[0] + h * a.v_stride[1];
    float* out = a.out + g * a.out_stride[0] + h * a.out_stride[1];
    if (n == 0) {  // nothing to attend to: zeros (SDPA would give NaN)
      for (int64_t i = 0; i < a.queries; ++i)
        for (int64_t c = 0; c < a.dim; ++c) out[i * a.out_stride[2] + c] = 0.f;
      continue;
    }
    // Scores, K read once for all query rows: scratch[i * n + s].
    int64_t s = 0;
    if constexpr (kChunks > 0) {
      if (a.queries == 1) {  // self-attention (measured: with several query rows the row-by-row loop wins)
        for (; s + 4 <= n; s += 4) {
          for (int j = 0; j < 4; ++j) PrefetchRow<kChunks>(v + (s + j) * a.v_stride[2]);
          Dot4<kChunks>(q, k + s * a.k_stride[2], a.k_stride[2], a.scale, scratch + s);
        }
      }
    }
    for (; s < n; ++s) {
      const float* kr = k + s * a.k_stride[2];
      PrefetchRow<kChunks>(v + s * a.v_stride[2]);
      for (int64_t i = 0; i < a.queries; ++i)
        scratch[i * n + s] = Dot<kChunks>(q + i * a.q_stride[2], kr, a.dim) * a.scale;
    }
    bool holes = false;
    for (int64_t s = 0; s < n; ++s) holes |= mask[s * a.mask_stride[1]] == 0;
    for (int64_t i = 0; i < a.queries; ++i) {
      float* p = scratch + i * n;
      if (holes) {
        // Masked positions join the softmax at the row's max minus 200 (exp underflows to ~0 relative to the
        // max's 1), then are zeroed exactly, so neither the max nor the sum sees them.
        float m = -3.4e38f;
        for (int64_t s = 0; s < n; ++s)
          if (mask[s * a.mask_stride[1]] != 0) m = Max(m, p[s]);
        for (int64_t s = 0; s < n; ++s)
          if (mask[s * a.mask_stride[1]] == 0) p[s] = m - 200.f;
      }
      float sum = SoftmaxNumerators(p, n);
      if (holes) {
        for (int64_t s = 0; s < n; ++s)
          if (mask[s * a.mask_stride[1]] == 0) {
            sum -= p[s];
            p[s] = 0.f;
          }
      }
      WeightedSum<kChunks>(p, v, a.v_stride[2], n, a.dim, 1.f / sum, out + i * a.out_stride[2]);
    }
  }
}

}  // namespace

void FLORENCE_DECODE_ATTENTION_ENTRY(const DecodeAttentionArgs& a, int64_t begin, int64_t end, float* scratch) {
  switch (a.dim) {  // Florence-2's head size is 64 (base and large); the others take the plain loops
    case 64: return Attend<8>(a, begin, end, scratch);
    case 32: return Attend<4>(a, begin, end, scratch);
    case 128: return Attend<16>(a, begin, end, scratch);
    default: return Attend<0>(a, begin, end, scratch);
  }
}

}  // namespace florence::ops
