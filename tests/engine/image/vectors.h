// The image test vectors written by tools/image_vectors.py (CTest setup test
// setup.image_vectors): encoded files, PIL's decoded pixels and transformers'
// pixel_values. See that script for the layout of the directory.
//
// The tests loop over the vectors inside a few TEST()s rather than
// instantiating one test per file: gtest_discover_tests lists tests before the
// setup test has written anything.
#ifndef FLORENCE_TESTS_ENGINE_IMAGE_VECTORS_H_
#define FLORENCE_TESTS_ENGINE_IMAGE_VECTORS_H_

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/image/decode.h"
#include "engine/model_dir.h"
#include "nlohmann/json.hpp"

namespace florence::testdata {

struct GoodImage {
  std::string name;
  std::string file;    // encoded image
  std::string format;  // "jpeg", "png", "webp", "bmp", "tiff"
  bool lossless = false;
  std::string pil_mode;  // Image.open(file).mode
  int width = 0;
  int height = 0;
  std::string rgb;  // PIL's convert("RGB") pixels, HWC uint8
  // processor output, [3, size, size] f32; may be empty
  std::string pixel_values;
  std::string pixel_values_sha256;  // of that output's bytes; always set
};

struct BadImage {
  std::string name;
  std::string file;
  std::string why;
  std::string message;  // lower-case substring of the expected error
};

struct OversizedImage {
  std::string name;
  std::string file;
  int64_t width = 0;
  int64_t height = 0;
};

// Random noise and PIL's BICUBIC resize of it (uint8 HWC files).
struct ResizeCase {
  std::string name;
  std::string input;
  int width = 0;
  int height = 0;
  std::string output;
  int out_width = 0;
  int out_height = 0;
};

struct ImageVectors {
  std::string dir;
  engine::PreprocessConfig preprocess;
  std::vector<GoodImage> good;
  std::vector<BadImage> bad;
  std::vector<OversizedImage> oversized;
  std::vector<ResizeCase> resize;
};

inline std::string ReadFileBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

// The vectors directory: $FLORENCE_TEST_IMAGE_VECTORS, else this build tree's.
inline std::string ImageVectorsDir() {
  const char* env = std::getenv("FLORENCE_TEST_IMAGE_VECTORS");
  return env != nullptr && *env != '\0' ? env
                                        : FLORENCE_TEST_IMAGE_VECTORS_DEFAULT;
}

// Parses DIR/index.json; paths in the result are absolute. Throws on a missing
// or malformed index (run the setup test: ctest -R setup.image_vectors).
inline ImageVectors LoadImageVectors() {
  ImageVectors v;
  v.dir = ImageVectorsDir();
  const auto index =
      nlohmann::json::parse(ReadFileBytes(v.dir + "/index.json"));
  auto path = [&v](const nlohmann::json& j, const char* key) {
    return j.contains(key) ? v.dir + "/" + j.at(key).get<std::string>()
                           : std::string();
  };
  v.preprocess.size = index.at("size").get<int64_t>();
  v.preprocess.resample = "bicubic";
  v.preprocess.rescale_factor = index.at("rescale_factor").get<double>();
  for (int c = 0; c < 3; ++c) {
    v.preprocess.mean[c] = index.at("mean").at(c).get<double>();
    v.preprocess.std[c] = index.at("std").at(c).get<double>();
  }
  for (const auto& g : index.at("good")) {
    v.good.push_back({g.at("name"), path(g, "file"), g.at("format"),
                      g.at("lossless"), g.at("pil_mode"), g.at("width"),
                      g.at("height"), path(g, "rgb"), path(g, "pixel_values"),
                      g.at("pixel_values_sha256")});
  }
  for (const auto& b : index.at("bad")) {
    v.bad.push_back(
        {b.at("name"), path(b, "file"), b.at("why"), b.at("message")});
  }
  for (const auto& o : index.at("oversized")) {
    v.oversized.push_back(
        {o.at("name"), path(o, "file"), o.at("width"), o.at("height")});
  }
  for (const auto& r : index.at("resize")) {
    v.resize.push_back({r.at("name"), path(r, "input"), r.at("width"),
                        r.at("height"), path(r, "output"), r.at("out_width"),
                        r.at("out_height")});
  }
  return v;
}

// Raw little-endian float32 file (the host is little-endian).
// The vectors, loaded once per test binary.
inline const ImageVectors& SharedImageVectors() {
  static const ImageVectors* const vectors =
      new ImageVectors(LoadImageVectors());
  return *vectors;
}

inline std::vector<float> ReadFloats(const std::string& path) {
  const std::string bytes = ReadFileBytes(path);
  std::vector<float> out(bytes.size() / sizeof(float));
  std::memcpy(out.data(), bytes.data(), out.size() * sizeof(float));
  return out;
}

// PIL's pixels of the largest RGB JPEG photo among the vectors (the source of
// the large photos that tests/engine/image/jpeg_writer.h makes); empty if
// there is none.
inline engine::RgbImage LargestJpegPhoto(const ImageVectors& vectors) {
  const GoodImage* best = nullptr;
  for (const GoodImage& v : vectors.good) {
    if (v.format == "jpeg" && v.pil_mode == "RGB" &&
        (best == nullptr || int64_t{v.width} * v.height > int64_t{best->width} * best->height)) {
      best = &v;
    }
  }
  engine::RgbImage image;
  if (best == nullptr) return image;
  image.width = best->width;
  image.height = best->height;
  const std::string bytes = ReadFileBytes(best->rgb);
  image.rgb.assign(bytes.begin(), bytes.end());
  return image;
}

}  // namespace florence::testdata

#endif  // FLORENCE_TESTS_ENGINE_IMAGE_VECTORS_H_
