// A parsed TaskResult as JSON in the shape of transformers'
// post_process_generation(...)[task]: a string for text tasks, else
// {"bboxes", "labels"}, {"quad_boxes", "labels"}, {"polygons", "labels"} or
// the four open-vocabulary keys. One writer for the CLI's output and the
// tests that compare with transformers.
#ifndef FLORENCE_ENGINE_POSTPROCESS_RESULT_JSON_H_
#define FLORENCE_ENGINE_POSTPROCESS_RESULT_JSON_H_

#include <nlohmann/json.hpp>

#include "engine/postprocess/parse.h"

namespace florence::engine {

enum class Coordinates {
  kFloat,      // our bin centres, as floats (the API's convention)
  kTruncated,  // transformers' native .int(): truncation toward zero
};

nlohmann::json TaskResultJson(const TaskResult& result, Coordinates coords);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_POSTPROCESS_RESULT_JSON_H_
