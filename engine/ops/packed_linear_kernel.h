// The packed-linear kernel body, compiled once per instruction set (packed_linear_avx2.cc with -mavx2 -mfma,
// packed_linear_generic.cc with the build's default flags) and picked at run time by packed_linear.cc. Like
// decode_attention_kernel.h: internal linkage only and no library templates, so the two compilations cannot
// share an inline function compiled for the wrong instruction set.
//
// The shape it is for: a decode step's few rows (1..64) against a large weight. A register tile of up to 6 rows
// x 16 columns (12 accumulators of 8 floats) walks one packed panel's input dimension: per input element two
// 8-float loads of the panel, one broadcast per row and two FMAs per row. At one or two rows the panel streams
// from memory once, on the hardware prefetchers (bandwidth-bound). From three rows on the panel is walked in
// chunks of input elements (4-8 KB of weights), each revisited from L1 by every 6-row tile, and the kernel asks
// for the next chunk's lines itself while the current one is computed: without that, memory idles while the
// tiles after the first compute and the first tile stalls on memory (measured on a 2-core Zen 3: a step's
// linears 7-23% faster at 3-32 rows, 4% at 54; no change at 1-2 rows, where the prefetch only costs).
//
// Include after defining FLORENCE_PACKED_LINEAR_ENTRY, the name of the entry point this file compiles.
#include <cstdint>
#include <cstring>

#include "engine/ops/packed_linear_args.h"
#include "engine/ops/vec8.h"

namespace florence::ops {
namespace {

constexpr int64_t kPanel = kPackedLinearPanel;
static_assert(kPanel == 16, "the register tile is two 8-float vectors wide");
constexpr int64_t kTileRows = 6;
constexpr int64_t kChunkFromRows = 3;  // fewer rows: the whole panel at once, no software prefetch
// Input elements per chunk: 128 (8 KB of weights), 64 with two tiles (measured best at 7-12 rows).
constexpr int64_t kChunk = 128;
constexpr int64_t kChunkTwoTiles = 64;

// c[r, 0..16) (+)= sum_k x[r, k] * panel[k, 0..16) for R rows; `init` (16 floats) starts every row's sums
// (the first chunk), otherwise they continue from c. The first `ahead_lines` steps each prefetch one 64-byte
// line (one input element of a panel) from `ahead` on.
template <int R>
inline void Tile(const float* x, int64_t ldx, const float* panel, int64_t kc, float* c, int64_t ldc,
                 const float* init, const float* ahead, int64_t ahead_lines) {
  F8 acc[R][2];
  for (int r = 0; r < R; ++r) {
    acc[r][0] = Load(init != nullptr ? init : c + r * ldc);
    acc[r][1] = Load(init != nullptr ? init + 8 : c + r * ldc + 8);
  }
  for (int64_t k = 0; k < kc; ++k) {
    if (k < ahead_lines) __builtin_prefetch(ahead + k * kPanel, 0, 3);
    const F8 b0 = Load(panel + k * kPanel);
    const F8 b1 = Load(panel + k * kPanel + 8);
    for (int r = 0; r < R; ++r) {
      const F8 a = Splat(x[r * ldx + k]);
      acc[r][0] += a * b0;
      acc[r][1] += a * b1;
    }
  }
  for (int r = 0; r < R; ++r) {
    Store(c + r * ldc, acc[r][0]);
    Store(c + r * ldc + 8, acc[r][1]);
  }
}

inline void Rows(int64_t n, const float* x, int64_t ldx, const float* panel, int64_t kc, float* c, int64_t ldc,
                 const float* init, const float* ahead, int64_t ahead_lines) {
  switch (n) {
    case 1: Tile<1>(x, ldx, panel, kc, c, ldc, init, ahead, ahead_lines); break;
    case 2: Tile<2>(x, ldx, panel, kc, c, ldc, init, ahead, ahead_lines); break;
    case 3: Tile<3>(x, ldx, panel, kc, c, ldc, init, ahead, ahead_lines); break;
    case 4: Tile<4>(x, ldx, panel, kc, c, ldc, init, ahead, ahead_lines); break;
    case 5: Tile<5>(x, ldx, panel, kc, c, ldc, init, ahead, ahead_lines); break;
    default: Tile<6>(x, ldx, panel, kc, c, ldc, init, ahead, ahead_lines); break;
  }
}

}  // namespace

void FLORENCE_PACKED_LINEAR_ENTRY(const PackedLinearArgs& a, int64_t begin, int64_t end, float* tile) {
  const int64_t tiles = (a.rows + kTileRows - 1) / kTileRows;
  const bool chunked = a.rows >= kChunkFromRows;
  const int64_t chunk = !chunked ? a.in : tiles == 2 ? kChunkTwoTiles : kChunk;
  for (int64_t p = begin; p < end; ++p) {
    const float* panel = a.packed + p * a.in * kPanel;
    const int64_t col = p * kPanel;
    const int64_t width = a.out - col < kPanel ? a.out - col : kPanel;
    float init[kPanel] = {};
    if (a.bias != nullptr) std::memcpy(init, a.bias + col, static_cast<size_t>(width) * sizeof(float));
    // A full panel writes into y; the last, partial one into the tile, copied out below.
    const bool full = width == kPanel;
    float* c = full ? a.y + col : tile;
    const int64_t ldc = full ? a.out : kPanel;
    for (int64_t k0 = 0; k0 < a.in; k0 += chunk) {
      const int64_t kc = a.in - k0 < chunk ? a.in - k0 : chunk;
      // The next chunk's lines, one per input element: contiguous with this one, running on into the next
      // panel (none after the range's last chunk). One tile prefetches all of them; with several, the tiles
      // after the first (which would meet the chunk in memory had it not been asked for before) share them out.
      const bool last = p + 1 == end && k0 + kc >= a.in;
      const float* next = panel + (k0 + kc) * kPanel;
      for (int64_t m = 0, t = 0; m < a.rows; m += kTileRows, ++t) {
        const int64_t n = a.rows - m < kTileRows ? a.rows - m : kTileRows;
        int64_t lo = 0, hi = 0;
        if (chunked && !last && tiles == 1) {
          hi = chunk;
        } else if (chunked && !last && t > 0) {
          lo = chunk * (t - 1) / (tiles - 1);
          hi = chunk * t / (tiles - 1);
        }
        Rows(n, a.x + m * a.in + k0, a.in, panel + k0 * kPanel, kc, c + m * ldc, ldc, k0 == 0 ? init : nullptr,
             next + lo * kPanel, hi - lo);
      }
    }
    if (!full) {
      for (int64_t m = 0; m < a.rows; ++m) {
        std::memcpy(a.y + m * a.out + col, tile + m * kPanel, static_cast<size_t>(width) * sizeof(float));
      }
    }
  }
}

}  // namespace florence::ops

#undef FLORENCE_PACKED_LINEAR_ENTRY
