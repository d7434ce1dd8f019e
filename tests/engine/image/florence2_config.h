// Test and benchmark helper: Florence-2's preprocessing configuration as its
// processor ships it (docs/FLORENCE2.md §2.1), for code that runs the image
// path without a model directory.
#ifndef FLORENCE_TESTS_ENGINE_IMAGE_FLORENCE2_CONFIG_H_
#define FLORENCE_TESTS_ENGINE_IMAGE_FLORENCE2_CONFIG_H_

#include "engine/model_dir.h"

namespace florence::testdata {

inline engine::PreprocessConfig Florence2PreprocessConfig() {
  engine::PreprocessConfig config;
  config.size = 768;
  config.resample = "bicubic";
  config.rescale_factor = 1.0 / 255.0;
  config.mean = {0.485, 0.456, 0.406};
  config.std = {0.229, 0.224, 0.225};
  return config;
}

}  // namespace florence::testdata

#endif  // FLORENCE_TESTS_ENGINE_IMAGE_FLORENCE2_CONFIG_H_
