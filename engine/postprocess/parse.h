// Parses a decoded Florence-2 generation into the typed result of its task
// (FLORENCE2.md section 5).
//
// The rules are those of transformers' native Florence2PostProcessor
// (processing_florence2.py, transformers 5.24, with the post-processor config
// the converted checkpoints ship), re-implemented without regexes or Torch:
// labels and texts come out byte-identical, and coordinates truncated to int
// equal transformers' (which truncates). tools/parser_vectors.py records
// transformers' answers; tests/engine/postprocess/ checks them.
//
// Where this parser differs from transformers on purpose:
// * It reads the text only up to the end-of-sequence token: a leading "</s>"
//   (the decoder start token) is skipped and everything from the next "</s>"
//   on is dropped. Real generations have only <pad> there, which transformers
//   deletes for structured tasks but leaves in pure-text answers
//   ("a car<pad><pad>").
// * Coordinates are the float bin centres, x = (bin + 0.5) * width / 1000,
//   computed in float32 exactly as torch does, so truncating them reproduces
//   transformers' ints (which are not always floor of the exact value: bin 187
//   on a 144-pixel side is 26.999998f -> 26, not 27).
// * `<loc_N>` digits are ASCII; Python's \d also takes other Unicode digits.
//
// Torch-free; callable from any thread (no shared state).
#ifndef FLORENCE_ENGINE_POSTPROCESS_PARSE_H_
#define FLORENCE_ENGINE_POSTPROCESS_PARSE_H_

#include <array>
#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "engine/task.h"

namespace florence::engine {

// Pixel coordinates in the original image; (x1, y1) top-left, (x2, y2)
// bottom-right as generated (not reordered or clamped: a bin past 999 lands
// outside the image, as in transformers).
struct Box {
  float x1 = 0;
  float y1 = 0;
  float x2 = 0;
  float y2 = 0;
};

struct Detection {
  Box box;
  std::string label;  // "" for region proposals
};

// Four corners x1, y1, x2, y2, x3, y3, x4, y4 in generation order.
struct QuadBox {
  std::array<float, 8> points{};
};

struct OcrRegion {
  QuadBox quad;
  std::string text;
};

// One segmented instance: polygons of alternating x, y coordinates. A polygon
// may be empty (a lone <loc_N> before <sep>); odd counts lose the last value.
struct PolygonInstance {
  std::vector<std::vector<float>> polygons;
  std::string label;  // "" for the segmentation tasks
};

// Per post-processing type (engine/task.h PostProcess):
struct TextResult {  // kPureText
  std::string text;
};
struct DetectionResult {  // kDescriptionWithBboxes, kBboxes, kPhraseGrounding
  std::vector<Detection> detections;
};
struct OcrResult {  // kOcr
  std::vector<OcrRegion> regions;
};
struct SegmentationResult {  // kPolygons
  std::vector<PolygonInstance> instances;
};
// kDescriptionWithBboxesOrPolygons: boxes, or polygons when the generation
// contains <poly>; never both.
struct OpenVocabularyResult {
  std::vector<Detection> detections;
  std::vector<PolygonInstance> polygons;
};

using TaskResult = std::variant<TextResult, DetectionResult, OcrResult,
                                SegmentationResult, OpenVocabularyResult>;

// Parses `generated_text`, the generated ids decoded WITH special tokens (e.g.
// "</s><s>car<loc_53><loc_333><loc_933><loc_774></s><pad>"), for `task` on an
// image of `image_width` x `image_height` pixels (the original image, before
// resizing). The alternative held follows SpecOf(task).post_process.
//
// Malformed generations (truncated loc groups, no end token, stray tags) are
// parsed the way transformers parses them, never rejected. Errors:
// InvalidArgument for a non-positive image side or a value outside Task.
absl::StatusOr<TaskResult> ParseGeneration(Task task,
                                           absl::string_view generated_text,
                                           int image_width, int image_height);

// Pixel coordinate of the centre of `bin` (0..999) along a side of `size`
// pixels: (bin + 0.5) * size / 1000 in float32 arithmetic, like transformers'
// Florence2PostProcessor.dequantize before its int cast.
float DequantizeCoordinate(int64_t bin, int size);

}  // namespace florence::engine

#endif  // FLORENCE_ENGINE_POSTPROCESS_PARSE_H_
