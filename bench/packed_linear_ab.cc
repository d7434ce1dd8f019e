// florence::packed_linear's kernel body at two revisions, side by side on the linear layers of one decode step of
// the base model (6 decoder layers' q|k|v, self out, cross q, cross out, fc1, fc2, then lm_head; each weight
// distinct, 355 MB, so they come from memory as in a real step). Built and run by bench/packed_linear_ab.sh,
// which compiles packed_linear_kernel.h twice (a given git revision's and the working tree's) into the entry
// points PackedLinearOld and PackedLinearNew; this file times them in turn, round after round (which goes first
// alternating), on two OpenMP threads splitting the panels as at::parallel_for does, checks that both give the
// same outputs, and prints one JSON line per row count: median milliseconds of each and new / old.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "engine/ops/packed_linear_args.h"

namespace florence::ops {
void PackedLinearOld(const PackedLinearArgs& args, int64_t begin, int64_t end, float* tile);
void PackedLinearNew(const PackedLinearArgs& args, int64_t begin, int64_t end, float* tile);
}  // namespace florence::ops

namespace {

using florence::ops::kPackedLinearPanel;
using florence::ops::PackedLinearArgs;
using Kernel = void (*)(const PackedLinearArgs&, int64_t, int64_t, float*);

struct Layer {
  int64_t out, in;
  std::vector<float> packed, bias;
};

// One step's linears through `kernel` for `rows` rows; returns milliseconds.
double Step(Kernel kernel, const std::vector<Layer>& layers, const float* x, float* y, int64_t rows, int threads) {
  const auto t0 = std::chrono::steady_clock::now();
  for (const Layer& l : layers) {
    const PackedLinearArgs args{x, l.packed.data(), l.bias.data(), y, rows, l.in, l.out};
    const int64_t panels = (l.out + kPackedLinearPanel - 1) / kPackedLinearPanel;
#pragma omp parallel num_threads(threads)
    {
      const int64_t per = (panels + omp_get_num_threads() - 1) / omp_get_num_threads();
      const int64_t begin = omp_get_thread_num() * per, end = std::min(panels, begin + per);
      std::vector<float> tile(static_cast<size_t>(rows * kPackedLinearPanel));
      if (begin < end) kernel(args, begin, end, tile.data());
    }
  }
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<int64_t> row_counts;
  int repeats = 21, threads = 2;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg.rfind("--repeats=", 0) == 0) {
      repeats = std::atoi(arg.c_str() + 10);
    } else if (arg.rfind("--threads=", 0) == 0) {
      threads = std::atoi(arg.c_str() + 10);
    } else {
      row_counts.push_back(std::atoll(arg.c_str()));
    }
  }
  if (row_counts.empty()) row_counts = {1, 3, 8, 16, 32, 54};
  constexpr int64_t kD = 768, kFfn = 3072, kVocab = 51289;
  std::vector<std::pair<int64_t, int64_t>> shapes;  // (out, in)
  for (int layer = 0; layer < 6; ++layer) {
    for (auto s : {std::pair{3 * kD, kD}, {kD, kD}, {kD, kD}, {kD, kD}, {kFfn, kD}, {kD, kFfn}}) shapes.push_back(s);
  }
  shapes.push_back({kVocab, kD});
  std::mt19937 gen(7);
  std::uniform_real_distribution<float> uniform(-1.f, 1.f);
  std::vector<Layer> layers;
  double flop_per_row = 0;
  for (auto [out, in] : shapes) {
    flop_per_row += 2.0 * out * in;
    // Random panels: the kernel's cost does not depend on the values (the layout is [panels, in, 16]).
    Layer l{out, in, std::vector<float>((out + kPackedLinearPanel - 1) / kPackedLinearPanel * kPackedLinearPanel * in),
            std::vector<float>(out)};
    for (float& w : l.packed) w = uniform(gen) * 0.05f;
    for (float& b : l.bias) b = uniform(gen);
    layers.push_back(std::move(l));
  }
  const int64_t max_rows = *std::max_element(row_counts.begin(), row_counts.end());
  std::vector<float> x(static_cast<size_t>(max_rows * kFfn)), y_old(static_cast<size_t>(max_rows * kVocab)),
      y_new(y_old.size());
  for (float& v : x) v = uniform(gen);
  int failures = 0;
  for (const int64_t rows : row_counts) {
    std::vector<double> old_ms, new_ms;
    for (int r = 0; r < repeats + 1; ++r) {  // round 0 warms up
      const bool old_first = r % 2 == 0;
      for (int turn = 0; turn < 2; ++turn) {
        const bool old_now = (turn == 0) == old_first;
        const double ms = Step(old_now ? &florence::ops::PackedLinearOld : &florence::ops::PackedLinearNew, layers,
                               x.data(), old_now ? y_old.data() : y_new.data(), rows, threads);
        if (r > 0) (old_now ? old_ms : new_ms).push_back(ms);
      }
    }
    // The last layer (lm_head) is what y holds after a step: both revisions must agree on it.
    double worst = 0;
    for (int64_t i = 0; i < rows * kVocab; ++i) worst = std::max(worst, double(std::fabs(y_old[i] - y_new[i])));
    const bool same = worst <= 1e-3;
    failures += same ? 0 : 1;
    std::sort(old_ms.begin(), old_ms.end());
    std::sort(new_ms.begin(), new_ms.end());
    const double o = old_ms[old_ms.size() / 2], n = new_ms[new_ms.size() / 2];
    std::printf(
        "{\"rows\": %lld, \"old_ms\": %.2f, \"new_ms\": %.2f, \"new_over_old\": %.3f, \"speedup\": %.2f, "
        "\"new_gflops\": %.1f, \"same_outputs\": %s}\n",
        static_cast<long long>(rows), o, n, n / o, o / n, flop_per_row * rows / (n * 1e6), same ? "true" : "false");
  }
  return failures == 0 ? 0 : 1;
}
