// Request-image preparation with and without reduced-scale JPEG decoding
// (florence2-server --jpeg_scaled_decode): decode + Florence-2's resize and
// normalization to 768x768, the work a request's worker does before it queues.
//
//   build/bench/florence2-image-bench --source bench/results/images/astronaut.jpg
//       [--sizes 1920x1080,3264x2448,4032x3024,6000x4000] [--repeats 15] [--quality 90]
//
// Each size is a large "photo" made from --source (bicubic, plus grain so the
// file holds camera-like detail; tests/engine/image/jpeg_writer.h), encoded at
// --quality. The two paths alternate, each timed --repeats times; the table
// gives medians, their ratio and how far the scaled path moves the model input
// (mean |difference| of the normalized pixels, in 8-bit levels).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "engine/image/decode.h"
#include "engine/image/preprocess.h"
#include "tests/engine/image/florence2_config.h"
#include "tests/engine/image/jpeg_writer.h"

namespace {

using florence::engine::DecodeImage;
using florence::engine::DecodeLimits;
using florence::engine::PreprocessConfig;
using florence::engine::RgbImage;

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

int Usage() {
  std::fprintf(stderr,
               "usage: florence2-image-bench --source IMAGE [--sizes WxH,...] [--repeats N] "
               "[--quality Q]\n");
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string source_path;
  std::string sizes = "1920x1080,3264x2448,4032x3024,6000x4000";
  int repeats = 15;
  int quality = 90;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const std::string value = argv[i + 1];
    if (flag == "--source") {
      source_path = value;
    } else if (flag == "--sizes") {
      sizes = value;
    } else if (flag == "--repeats" && absl::SimpleAtoi(value, &repeats) && repeats > 0) {
    } else if (flag == "--quality" && absl::SimpleAtoi(value, &quality)) {
    } else {
      return Usage();
    }
  }
  if (source_path.empty() || argc % 2 == 0) return Usage();
  std::ifstream in(source_path, std::ios::binary);
  std::stringstream buffer;
  buffer << in.rdbuf();
  absl::StatusOr<RgbImage> source = DecodeImage(buffer.str());
  if (!source.ok()) {
    std::fprintf(stderr, "%s: %s\n", source_path.c_str(), source.status().ToString().c_str());
    return 1;
  }
  const PreprocessConfig config = florence::testdata::Florence2PreprocessConfig();
  DecodeLimits scaled_limits;
  scaled_limits.jpeg_scaled_min_side = static_cast<int>(config.size);
  std::vector<float> full_out(florence::engine::PreprocessedSize(config));
  std::vector<float> scaled_out(full_out.size());

  std::printf("| photo | JPEG KiB | decoded at | full: decode + preprocess ms | scaled ms | full / scaled | "
              "input moved, mean levels |\n|---|---|---|---|---|---|---|\n");
  for (absl::string_view size : absl::StrSplit(sizes, ',')) {
    std::vector<absl::string_view> wh = absl::StrSplit(size, 'x');
    int width = 0, height = 0;
    if (wh.size() != 2 || !absl::SimpleAtoi(wh[0], &width) || !absl::SimpleAtoi(wh[1], &height) ||
        width <= 0 || height <= 0) {
      return Usage();
    }
    const std::string jpeg =
        florence::testdata::EncodeJpeg(florence::testdata::MakeLargePhoto(*source, width, height, 6), quality);
    std::vector<double> full_ms, scaled_ms;
    int scaled_w = 0, scaled_h = 0;
    for (int r = 0; r < repeats + 1; ++r) {  // the first round warms up, untimed
      for (const bool scaled : {false, true}) {
        const auto t0 = std::chrono::steady_clock::now();
        absl::StatusOr<RgbImage> image = scaled ? DecodeImage(jpeg, scaled_limits) : DecodeImage(jpeg);
        if (!image.ok()) {
          std::fprintf(stderr, "decode: %s\n", image.status().ToString().c_str());
          return 1;
        }
        const absl::Status st = florence::engine::PreprocessInto(
            *image, config, absl::MakeSpan(scaled ? scaled_out : full_out));
        if (!st.ok()) {
          std::fprintf(stderr, "preprocess: %s\n", st.ToString().c_str());
          return 1;
        }
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
        if (r > 0) (scaled ? scaled_ms : full_ms).push_back(ms);
        if (scaled) {
          scaled_w = image->width;
          scaled_h = image->height;
        }
      }
    }
    double diff = 0;
    for (size_t i = 0; i < full_out.size(); ++i) diff += std::abs(double{full_out[i]} - scaled_out[i]);
    const double levels = diff / full_out.size() * 255 * 0.226;  // normalized units -> 8-bit levels (mean std)
    const double f = Median(full_ms), s = Median(scaled_ms);
    std::printf("| %dx%d | %.0f | %dx%d | %.1f | %.1f | %.2fx | %.2f |\n", width, height, jpeg.size() / 1024.0,
                scaled_w, scaled_h, f, s, f / s, levels);
  }
  return 0;
}
